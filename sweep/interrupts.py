"""Ctrl-C, SIGTERM and SIGHUP, handled where it is safe to stop.

Python runs a signal handler between any two bytecodes, including inside garbage
collection callbacks that swallow exceptions, so raising from the handler can be lost.
The handler only records the signal; training checks it after every batch and the
worker loop before every trial, and raise `KeyboardInterrupt` there. Optuna then
records the trial as failed, our objective ends its MLflow run KILLED, and the process
exits. A second signal raises at once, for a user who will not wait.

SIGHUP (the terminal closed) stops a run like SIGTERM, unless the run was started with it
ignored (`nohup`), which stays so. A `--jobs` worker process also stops when the `sweep
run` that started it is gone (`watch_parent`): killed with SIGKILL, it cannot pass a
signal on, and its workers would otherwise train on, unseen, until the study is done.
"""

from __future__ import annotations

import _thread
import multiprocessing
import os
import signal
import threading
import time
from types import FrameType

_received: list[int] = []
_stopping = False  # KeyboardInterrupt raised at a safe point: the trial is being recorded
_hangup_ignored = False  # started under `nohup`: SIGHUP stays ignored


def install() -> None:
    global _hangup_ignored, _stopping
    _received.clear()
    _stopping = False
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)
    _hangup_ignored = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    if not _hangup_ignored:
        signal.signal(signal.SIGHUP, _handle)


def restore() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN if _hangup_ignored else signal.SIG_DFL)


def watch_parent(grace: float = 2.0, deadline: float = 30.0) -> None:
    """In a `multiprocessing` child (call from the main thread): once the parent process is
    gone, however it died, request a stop as if SIGHUP had arrived (the parent's end of a
    pipe closes with it; `parent_process().join()` waits for that). No one waits for this
    process any more, so if no safe point comes within `grace` seconds (TensorFlow compiles a
    model for seconds before its first batch), the stop is raised wherever the main thread
    is, unless it is already recording its stopped trial; and if the process is still there
    `deadline` seconds later (stuck in native code), it exits, and the trial it leaves
    RUNNING is failed once its heartbeat is stale."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    signal.signal(signal.SIGUSR1, _stop_unless_stopping)

    def wait_then_stop() -> None:
        parent.join()
        _received.append(signal.SIGHUP)
        time.sleep(grace)
        _thread.interrupt_main(signal.SIGUSR1)  # decided in the main thread, which sets `_stopping`
        time.sleep(deadline)
        os._exit(128 + signal.SIGHUP)

    threading.Thread(target=wait_then_stop, name="sweep-parent-watch", daemon=True).start()


def _stop_unless_stopping(signum: int, frame: FrameType | None) -> None:
    global _stopping
    if not _stopping:
        _stopping = True
        raise KeyboardInterrupt


def _handle(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if len(_received) > 1:
        raise KeyboardInterrupt


def requested() -> int | None:
    """The first signal received since `install`, if any."""
    return _received[0] if _received else None


def stop_if_requested() -> None:
    """Call at a safe point: raises `KeyboardInterrupt` once a signal has arrived."""
    global _stopping
    if _received:
        _stopping = True
        raise KeyboardInterrupt


def exit_code() -> int:
    return 128 + (_received[0] if _received else signal.SIGINT)


def message() -> str:
    name = signal.Signals(requested() or signal.SIGINT).name
    return f"interrupted by {name}: running trials are marked failed; run `sweep run` again to resume"
