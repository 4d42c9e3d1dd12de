"""Error kinds shared by daemon and client, each with the CLI exit code it maps to."""

from __future__ import annotations

# Exit codes of the klaudio CLI (documented in `klaudio --help` and the README).
EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_UNAVAILABLE = 5
EXIT_TIMEOUT = 6
EXIT_TASK_STOPPED = 7
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class KlaudioError(Exception):
    """Base of every error a user may see: the message is one line, the exit code documented."""

    exit_code = EXIT_INTERNAL


class InvalidArgument(KlaudioError):
    """Bad input: the message names the field or value."""

    exit_code = EXIT_USAGE


class NotFound(KlaudioError):
    """An unknown task, agent or other named thing."""

    exit_code = EXIT_NOT_FOUND


class FailedPrecondition(KlaudioError):
    """An illegal transition or an operation the current state does not allow."""

    exit_code = EXIT_CONFLICT


class Unavailable(KlaudioError):
    """The daemon (or Docker behind it) cannot be reached."""

    exit_code = EXIT_UNAVAILABLE


class Timeout(KlaudioError):
    """A wait ran out of time."""

    exit_code = EXIT_TIMEOUT


class Unauthenticated(KlaudioError):
    """The call did not carry this user's daemon token."""

    exit_code = EXIT_UNAVAILABLE


class ResourceExhausted(KlaudioError):
    """A limit was hit, such as a follower too slow to keep up."""

    exit_code = EXIT_CONFLICT


class ConfigError(InvalidArgument):
    """A bad configuration value: the message names the key and where it came from."""


class Internal(KlaudioError):
    """A bug or an unexpected failure; the daemon log has details."""
