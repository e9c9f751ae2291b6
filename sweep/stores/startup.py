"""Start-up work that overlaps TensorFlow's import.

Creating a new local MLflow store (a SQLite file) takes seconds: importing MLflow and
running its schema migrations. `sweep run` has that done by a child process, under a
temporary name next to where the store belongs, while it imports TensorFlow and checks
the data and the model. Once every check has passed, the finished file is moved into
place (`install`); on bad input it is deleted (`discard`), so nothing is written.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

CREATE_TIMEOUT = 120  # seconds; past it, `Tracker` creates the store itself
# Opening a new SQLite store is what creates it (the very call `Tracker` makes first).
_CREATE = "import sys; from mlflow.tracking import MlflowClient; MlflowClient(sys.argv[1]).search_experiments(max_results=1)"


class NewTrackingStore:
    """A local SQLite tracking store that does not exist yet, being created aside."""

    def __init__(self, tracking_uri: str) -> None:
        self.path = _new_sqlite_file(tracking_uri)
        self.process: subprocess.Popen[bytes] | None = None
        if self.path is None:
            return
        _remove_leftovers(self.path)
        self.aside = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CREATE, f"sqlite:///{self.aside}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def install(self) -> None:
        """Move the created store into place, unless one appeared there meanwhile; if the
        child failed, `Tracker` creates the store itself, as without this."""
        if self.process is None or self.path is None:
            return
        try:
            created = self.process.wait(timeout=CREATE_TIMEOUT) == 0
        except subprocess.TimeoutExpired:
            created = False
        if created:
            with contextlib.suppress(OSError):  # exists already (never replaced), or no hard links here
                os.link(self.aside, self.path)
        self.discard()

    def discard(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for leftover in (self.aside, *(self.aside.with_name(self.aside.name + s) for s in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        self.process = None


@contextlib.contextmanager
def tracking_store_aside(tracking_uri: str) -> Iterator[NewTrackingStore]:
    """`NewTrackingStore` for the length of the block: whatever is not installed by its
    end is discarded."""
    store = NewTrackingStore(tracking_uri)
    try:
        yield store
    finally:
        store.discard()


def _remove_leftovers(path: Path) -> None:
    """Stores set aside by runs that were killed before they could clean up."""
    for leftover in path.parent.glob(f".{path.name}.*.new*"):
        pid = leftover.name.removeprefix(f".{path.name}.").split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _new_sqlite_file(uri: str) -> Path | None:
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(uri).database
    except ArgumentError:  # `check_tracking` says what is wrong with it
        return None
    if not database or database == ":memory:":
        return None
    path = Path(database).expanduser().resolve()
    return path if not path.exists() and path.parent.is_dir() else None
