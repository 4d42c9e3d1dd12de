"""Process checks shared by the CLI and the daemon."""

from __future__ import annotations

import os
from pathlib import Path


def alive(pid: int, name: bytes = b"klaudiod") -> bool:
    """Whether pid is a running process whose command line contains name.

    A zombie (exited, not yet reaped) is not alive, and neither is an unrelated program that
    reused the number. Where /proc is missing, existence is all that can be told.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" and name in (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return True
