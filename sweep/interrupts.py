"""Ctrl-C and SIGTERM, handled where it is safe to stop.

Python runs a signal handler between any two bytecodes, including inside garbage
collection callbacks that swallow exceptions, so raising from the handler can be lost.
The handler only records the signal; training checks it after every batch and the
worker loop before every trial, and raise `KeyboardInterrupt` there. Optuna then
records the trial as failed, our objective ends its MLflow run KILLED, and the process
exits. A second signal raises at once, for a user who will not wait.
"""

from __future__ import annotations

import signal
from types import FrameType

_received: list[int] = []


def install() -> None:
    _received.clear()
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)


def restore() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _handle(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if len(_received) > 1:
        raise KeyboardInterrupt


def requested() -> int | None:
    """The first signal received since `install`, if any."""
    return _received[0] if _received else None


def stop_if_requested() -> None:
    """Call at a safe point: raises `KeyboardInterrupt` once a signal has arrived."""
    if _received:
        raise KeyboardInterrupt


def exit_code() -> int:
    return 128 + (_received[0] if _received else signal.SIGINT)


def message() -> str:
    name = signal.Signals(requested() or signal.SIGINT).name
    return f"interrupted by {name}: running trials are marked failed; run `sweep run` again to resume"
