"""The exceptions `sweep` raises on purpose.

Every user-facing command catches `SweepError`, prints its message on one line and
exits with `exit_code`; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import reprlib
from typing import Any


def brief(value: Any, limit: int = 60) -> str:
    """`repr` cut to about `limit` characters per item: an error message echoes a value (a
    YAML alias bomb expands to millions of elements, an exception can quote a whole file),
    and stays one short line."""
    short = reprlib.Repr()  # keyword arguments need Python 3.12
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 2, 4, 4, limit, limit
    return short.repr(value)


class SweepError(Exception):
    """Base class: an error whose message is meant for the user, not a traceback."""

    exit_code = 1


class UsageError(SweepError):
    """Raised when the user's input is wrong and nothing has been started yet.

    A malformed or impossible study file, a missing data file or model builder,
    an unreachable storage or tracking server. Exit code 2, like a bad flag.
    """

    exit_code = 2


class Unreachable(UsageError):
    """Raised when a storage or tracking server does not answer; worth trying again while
    the server starts (`stores.checks.check_stores`' wait)."""


class ConfigError(UsageError):
    """Raised when a study file fails validation; the message names the key."""


class StudyAborted(SweepError):
    """Raised when a running study stops early because too many trials failed."""

    exit_code = 3


class StoreFailed(SweepError):
    """Raised when the Optuna storage fails mid-run (disk full, database down): the
    trial in flight cannot be recorded. It stays RUNNING until its heartbeat is stale;
    the next `sweep run` then fails and retries it."""

    exit_code = 4


class Interrupted(SweepError):
    """Raised when Ctrl-C or SIGTERM stopped a run; the running trials are marked failed."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code
