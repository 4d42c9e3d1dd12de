"""What a test needs of the machine (root, a program, a network): skipped without it, except
under `.ci/run`, which provides all of it, so that a missing need fails there, not hides."""

from __future__ import annotations

import os

import pytest

# Set by .ci/run.
STRICT = os.environ.get("KLAUDIO_TESTS_STRICT") == "1"


def need(met: bool, what: str) -> None:
    """Go on when met; otherwise skip the test naming what it needs (fail it under .ci/run)."""
    if met:
        return
    if STRICT:
        pytest.fail(f"this machine lacks what the test needs: {what}")
    pytest.skip(what)
