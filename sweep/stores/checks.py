"""Whether the stores can be used, checked before any work: reachable, logged in, holding
what a command reads, writable. Each failure is one line naming the store and the fix."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from sweep.errors import Unreachable, UsageError
from sweep.stores.urls import (
    SQLITE_BUSY_TIMEOUT,
    connect_timeout,
    error_summary,
    is_tracking_server,
    local_store_exists,
    local_store_path,
    mask_password,
)


def require_storage(url: str) -> None:
    """For commands that read a study: a `UsageError` if a local storage is not there, or
    is another database (opening it would create an empty database, or Optuna's tables in
    that one)."""
    if not local_store_exists(url):
        raise UsageError(f"no Optuna storage at {mask_password(url)}; run `sweep run` first or pass the right --storage")
    _require_table(url, "studies", "an Optuna storage", "pass the --storage (or SWEEP_STORAGE) that `sweep run` used")


def require_tracking_store(uri: str) -> None:
    """For commands that read a study's runs: a `UsageError` if a local tracking store is
    not there, or is another database (opening it would create one, or run MLflow's
    migrations in that one), or if a tracking server cannot be read with MLflow's login."""
    fix = "pass the --tracking-uri (or MLFLOW_TRACKING_URI) that `sweep run` used"
    if is_tracking_server(uri):
        check_tracking(uri)
        return
    if not local_store_exists(uri):
        raise UsageError(f"no MLflow tracking store at {mask_password(uri)}; {fix}")
    _require_table(uri, "experiments", "an MLflow tracking store", fix)


def _require_table(url: str, table: str, kind: str, fix: str) -> None:
    """A local SQLite file must hold `table`; read without opening the file for writing,
    unless a failed write must first be rolled back (`_roll_back_interrupted_write`)."""
    import sqlite3

    path = local_store_path(url)
    if path is None or not url.startswith("sqlite:"):
        return
    path = path.resolve()
    try:
        try:
            found = _has_table(path, table)
        except sqlite3.OperationalError:
            if not _roll_back_interrupted_write(path):
                raise
            found = _has_table(path, table)
    except sqlite3.Error as error:
        raise UsageError(f"{path} is not a usable SQLite database ({error}); {fix}") from None
    if not found:
        raise UsageError(f"{path} is not {kind} (it has no {table} table); {fix}")


def _has_table(path: Path, table: str) -> bool:
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT)) as db:
        return bool(db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchall())


def _roll_back_interrupted_write(path: Path) -> bool:
    """A write that failed halfway (a full disk, a file made read-only) leaves a hot journal,
    and then no one can read the database read-only (SQLITE_READONLY) until a writer rolls it
    back. SQLite does that on any read-write open, restoring the database as it was before
    that write; done here, where the file is writable again, read-only opens work after it.
    Returns whether there was a journal to roll back."""
    import sqlite3

    journal = path.with_name(path.name + "-journal")
    if not (journal.exists() and journal.stat().st_size and os.access(path, os.W_OK)):
        return False
    with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT)) as db:
        db.execute("SELECT count(*) FROM sqlite_master").fetchall()
    return True


def require_writable(url: str, what: str, fix: str) -> None:
    """For a command that writes to an existing local store (`sweep doctor --repair`): a
    `UsageError` if the store, or the folder SQLite keeps its journal in, is read-only, before
    a first write fails halfway. A server's store is found out by writing."""
    path = local_store_path(url)
    if path is None or not path.exists():
        return
    path = path.resolve()
    if not os.access(path, os.W_OK):  # also false for root on an immutable file (chattr +i)
        raise UsageError(f"the {what} {path} is read-only; {fix}")
    if url.startswith("sqlite:") and not os.access(path.parent, os.W_OK):
        raise UsageError(f"the folder {path.parent} of the {what} {path} is read-only (SQLite writes its journal "
                         f"there); {fix}")


def check_stores(storage_url: str, tracking_uri: str, wait: float = 0) -> None:
    """Reach the Optuna storage and the MLflow tracking store without writing to them.

    With `wait`, a server that does not answer yet is tried again every 2 s for up to
    `wait` seconds, saying so on stderr: containers started together (compose, Kubernetes)
    come up in no guaranteed order. Any other error fails at once.
    """
    # The wait starts when a server first does not answer, so however long that first try
    # took (a loaded machine, a connect timeout), the whole wait is left, and said.
    deadline: float | None = None
    for check, target in ((check_storage, storage_url), (check_tracking, tracking_uri)):
        said = False
        while True:
            try:
                check(target)
                break
            except Unreachable as error:
                if deadline is None:
                    deadline = time.monotonic() + wait
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                if not said:
                    print(f"waiting up to {left:.0f} s: {error}", file=sys.stderr)
                    said = True
                time.sleep(min(2.0, left))


def check_storage(url: str) -> None:
    """Reach the Optuna storage without writing to it (nothing is created on failure)."""
    _check_database(url, what="Optuna storage", fix="--storage or SWEEP_STORAGE")


def check_tracking(uri: str) -> None:
    """Reach the MLflow tracking store without writing to it."""
    fix = "--tracking-uri or MLFLOW_TRACKING_URI"
    if is_tracking_server(uri):
        _check_tracking_server(uri, fix)
    elif uri.startswith("file:") or "://" not in uri:
        folder = Path(uri.removeprefix("file://").removeprefix("file:")).expanduser()
        _check_folder(folder if folder.exists() else folder.parent, uri, fix)
    else:
        _check_database(uri, what="MLflow tracking store", fix=fix)


# What PostgreSQL's and MySQL's drivers say of a wrong or missing password
LOGIN_REFUSED = ("password authentication failed", "no password supplied", "Access denied for user")


# Gateways and proxies answer these while the server behind them starts: worth waiting for.
STARTING_STATUSES = (502, 503, 504)


def _check_tracking_server(uri: str, fix: str) -> None:
    """One read (an experiment search) with the credentials MLflow's client would send
    (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN, else
    ~/.mlflow/credentials): a server that refuses them says so at once; `/health` would not
    tell, since MLflow's basic-auth app leaves it open."""
    import requests

    try:
        requests.Request("GET", uri).prepare()
    except (requests.RequestException, ValueError):  # their messages quote pieces of the URL: never shown
        raise UsageError(
            f"the MLflow tracking URI {mask_password(uri)} is not a valid URL; percent-encode "
            f"# / ? @ : in its user and password (%23 %2F %3F %40 %3A) or fix {fix}"
        ) from None
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    credentials = get_default_host_creds(uri)
    try:
        response = http_request(credentials, "/api/2.0/mlflow/experiments/search", "GET",
                                params={"max_results": 1}, max_retries=0, timeout=10, raise_on_status=False)
    except Exception as error:  # requests' connection errors, wrapped by MLflow and urllib3
        while error.__cause__ is not None or error.__context__ is not None:  # the socket's own reason
            error = error.__cause__ or error.__context__  # type: ignore[assignment]
        raise Unreachable(f"cannot reach the MLflow tracking server {mask_password(uri)}: "
                          f"{error_summary(error)}; start it or fix {fix}") from None
    if response.status_code in (401, 403):
        given = credentials.username or credentials.token or mask_password(uri) != uri
        raise UsageError(
            f"the MLflow tracking server {mask_password(uri)} "
            f"{'refused the login given' if given else 'needs a login'} (HTTP {response.status_code}); "
            f"set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an MLflow user's"
        )
    if response.status_code != 200:
        raise (Unreachable if response.status_code in STARTING_STATUSES else UsageError)(
            f"the MLflow tracking server {mask_password(uri)} answered HTTP {response.status_code} "
            f"{response.reason}; start it or fix {fix}"
        )


def _check_database(url: str, what: str, fix: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        raise UsageError(f"{what} {mask_password(url)} is not a database URL; fix {fix}") from None
    if parsed.drivername.startswith("sqlite"):
        if parsed.database in (None, "", ":memory:"):
            raise UsageError(f"{what} {url} is in memory and would be lost; give a file, e.g. sqlite:///sweep.db")
        path = Path(parsed.database).expanduser().resolve()
        _check_folder(path.parent, url, fix)
        if path.exists():
            _check_sqlite_file(path, what, fix)
        return
    try:
        engine = create_engine(url, connect_args=connect_timeout(parsed.drivername))
        with engine.connect():
            pass
        engine.dispose()
    except Exception as error:  # sqlalchemy and its drivers raise many kinds
        summary = error_summary(error)
        if any(sign in summary for sign in LOGIN_REFUSED):  # the server answered: no use waiting
            raise UsageError(f"the {what} {mask_password(url)} refused the login ({summary}); fix the user or "
                             f"password in {fix} (or PGPASSWORD, ~/.pgpass)") from None
        raise Unreachable(
            f"cannot reach the {what} {mask_password(url)}: {summary}; "
            f"check {fix} and that the database is running"
        ) from None


def _check_sqlite_file(path: Path, what: str, fix: str) -> None:
    """An existing file must be a readable SQLite database (read-only check)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT)) as db:
            db.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.Error as error:
        raise UsageError(
            f"the {what} {path} is not a usable SQLite database ({error}); move it away to start "
            f"afresh, restore it from a backup, or fix {fix}"
        ) from None


def _check_folder(folder: Path, url: str, fix: str) -> None:
    if not folder.is_dir():
        raise UsageError(f"the folder {folder} of {mask_password(url)} does not exist; create it or fix {fix}")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"the folder {folder} of {mask_password(url)} is not writable; fix {fix}")
