"""The Optuna storage opened as sweep uses it: one writer at a time on SQLite, heartbeats,
a lock around a study's set-up, and studies read without creating them."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.errors import UsageError
from sweep.stores.checks import require_storage
from sweep.stores.urls import SQLITE_BUSY_TIMEOUT, connect_timeout, error_summary, mask_password

if TYPE_CHECKING:
    import optuna

    from sweep.stores.heartbeats import HeartbeatStorage


def heartbeat_interval() -> int:
    """Seconds between a running trial's heartbeats; a trial silent for 3 intervals is stale."""
    return int(os.environ.get("SWEEP_HEARTBEAT_INTERVAL", "20"))


@contextlib.contextmanager
def setup_lock(url: str, key: str) -> Iterator[None]:
    """Held while a `sweep run` sets a study up (stores, study, start design, baseline), so
    runs that start together on one storage do it once, one after the other.

    SQLite: an exclusive `flock` on the database's folder (the processes share a machine).
    PostgreSQL and MySQL: a session-level advisory lock on the storage's database, which
    every machine of a study reaches. Other databases: no lock.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        folder = os.open(Path(parsed.database or ".").expanduser().resolve().parent, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            yield
        finally:
            os.close(folder)  # releases the lock
        return
    statements = {
        "postgresql": ("SELECT pg_advisory_lock(hashtext(:key))", "SELECT pg_advisory_unlock(hashtext(:key))"),
        "mysql": ("SELECT GET_LOCK(:key, -1)", "SELECT RELEASE_LOCK(:key)"),
    }.get(parsed.get_backend_name())
    if statements is None:
        yield
        return
    engine = create_engine(url, connect_args=connect_timeout(parsed.drivername))
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            lock, unlock = statements
            connection.execute(text(lock), {"key": f"sweep:{key}"[:64]})
            try:
                yield
            finally:
                connection.execute(text(unlock), {"key": f"sweep:{key}"[:64]})
    finally:
        engine.dispose()


@contextlib.contextmanager
def experimental_api() -> Iterator[None]:
    """Optuna APIs sweep relies on that are still marked experimental, without the warning:
    heartbeats (`RDBStorage(heartbeat_interval=...)`, `fail_stale_trials`,
    `RetryHeartbeatStaleTrialCallback`, since Optuna 2.8) and `Study.set_metric_names` (3.2)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def open_storage(url: str, stale_trial_callback: Any = None, heartbeat: bool = False) -> HeartbeatStorage:
    """Optuna's RDB storage at `url`; a `UsageError` if it cannot be opened.

    SQLite gets a long busy timeout and write-ahead logging, so `--jobs 2..4` queue for
    the lock instead of failing with "database is locked". With `heartbeat`, running
    trials beat every `heartbeat_interval()` seconds and a silent one, or one that never
    beat (`sweep.stores.heartbeats`), is failed (and handed to `stale_trial_callback`) by the next
    worker that looks.
    """
    engine_kwargs: dict[str, Any] = {}
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    from sweep.stores.heartbeats import HeartbeatStorage

    beat = heartbeat_interval() if heartbeat else None
    for attempt in range(4):
        try:
            with experimental_api():
                storage = HeartbeatStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=beat,
                    grace_period=3 * beat if beat else None,
                    heartbeat_stale_trial_callback=stale_trial_callback,
                )
            if is_sqlite:
                from sqlalchemy import text

                with storage.engine.connect() as connection:
                    connection.execute(text("PRAGMA journal_mode=WAL"))
                if heartbeat:  # the workers, which pop queued trials; readers need no lock
                    _write_lock_first(storage.engine)
            return storage
        except Exception as error:  # sqlalchemy raises many kinds; all mean "cannot use it"
            # Workers starting together on an empty database race to create its tables;
            # the loser's next attempt finds them.
            if attempt == 3:
                raise UsageError(
                    f"cannot open the Optuna storage {mask_password(url)}: {error_summary(error)}; "
                    f"check the URL (--storage or SWEEP_STORAGE) and that the database is running"
                ) from None
            time.sleep(0.5 + random.random() * (attempt + 1))
    raise AssertionError("unreachable")


def _write_lock_first(engine: Any) -> None:
    """Every transaction on this SQLite engine takes the write lock first (BEGIN IMMEDIATE).

    Optuna reads a row, then updates it, relying on SELECT ... FOR UPDATE, which SQLite
    ignores: two workers popping the same queued trial (a start point, a retry) both saw it
    WAITING and both ran it, and the second failed with "Cannot tell a COMPLETE trial".
    With the lock taken first, the second sees the trial RUNNING and takes the next one.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite: let "begin" below open each transaction

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners: closed, reopened with them


def existing_study_attrs(url: str, name: str) -> dict[str, Any] | None:
    """The user attributes of study `name` (its config, data fingerprint, ...), or None if
    there is no such study; never creates tables."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite") and not Path(parsed.database or "").expanduser().exists():
        return None
    engine = create_engine(url, connect_args=connect_timeout(parsed.drivername))
    try:
        if not inspect(engine).has_table("studies"):
            return None
    finally:
        engine.dispose()
    storage = open_storage(url)
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return storage.get_study_user_attrs(study_id)


def load_study(name: str, url: str, storage: optuna.storages.RDBStorage | None = None) -> optuna.Study:
    """An existing study (in `storage`, already opened at `url`, if given); a `UsageError`
    naming the fix if there is none of that name."""
    import optuna

    if storage is None:
        require_storage(url)
        storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        known = f" (it holds: {', '.join(names)})" if names else " (it holds no studies)"
        raise UsageError(
            f"no study named {name!r} in {mask_password(url)}{known}; run `sweep run` first "
            f"or pass the right --storage"
        ) from None


# The keys of `study_rows`, in order: the columns of `sweep studies`' table and CSV.
STUDY_COLUMNS = ["study", "objectives", "complete", "running", "failed", "pruned", "best_val_accuracy",
                 "smallest_compressed_bytes"]


def study_rows(url: str) -> list[dict[str, Any]]:
    """A row per study in the storage at `url`: trial counts by state, objectives and best values."""
    import optuna

    from sweep.stores import records  # imports Optuna: here, where Optuna is needed anyway

    rows = []
    require_storage(url)
    opened = open_storage(url)  # one engine for all studies
    for summary in optuna.get_all_study_summaries(opened, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=opened)
        trials = study.get_trials(deepcopy=False)
        states = {state.name.lower(): sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
        done = [t for t in trials if records.has_metrics(t) and t.state.name == "COMPLETE"]
        rows.append({
            "study": summary.study_name,
            "objectives": ",".join(records.objectives(study)),
            "complete": states["complete"], "running": states["running"],
            "failed": states["fail"], "pruned": states["pruned"],
            "best_val_accuracy": max((records.trial_metrics(t)["val_accuracy"] for t in done), default=None),
            "smallest_compressed_bytes": min((records.trial_metrics(t)["compressed_bytes"] for t in done),
                                             default=None),
        })
    return rows
