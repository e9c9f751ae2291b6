"""Where results live: the Optuna storage and the MLflow tracking store.

Defaults are files in the working directory: `sqlite:///sweep.db` for Optuna and
MLflow 3's own default `sqlite:///mlflow.db`, so `mlflow ui` started there shows the
runs. `--storage`/`SWEEP_STORAGE` and `--tracking-uri`/`MLFLOW_TRACKING_URI` override
them; credentials belong in those environment variables, and any URL we print has
its password masked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.errors import Unreachable, UsageError

if TYPE_CHECKING:
    import optuna

    from sweep.stores.heartbeats import HeartbeatStorage

DEFAULT_STORAGE = "sqlite:///sweep.db"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def storage_url(flag: str | None = None) -> str:
    return flag or os.environ.get("SWEEP_STORAGE") or DEFAULT_STORAGE


def tracking_uri(flag: str | None = None) -> str:
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


SQLITE_BUSY_TIMEOUT = 60  # seconds a writer waits for the lock: parallel workers queue, not fail


def heartbeat_interval() -> int:
    """Seconds between a running trial's heartbeats; a trial silent for 3 intervals is stale."""
    return int(os.environ.get("SWEEP_HEARTBEAT_INTERVAL", "20"))


def local_store_path(uri: str) -> Path | None:
    """The file (SQLite) or folder (MLflow file store) of a local store; None for a server."""
    if uri.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        database = make_url(uri).database
        return Path(database).expanduser() if database and database != ":memory:" else None
    if uri.startswith("file:") or "://" not in uri:
        return Path(uri.removeprefix("file://").removeprefix("file:")).expanduser()
    return None


def local_store_exists(uri: str) -> bool:
    """Whether a local store (SQLite file, MLflow file store) is there; servers are assumed to be."""
    path = local_store_path(uri)
    if path is None:
        return not uri.startswith("sqlite:")  # an in-memory SQLite database holds nothing yet
    return path.is_file() if uri.startswith("sqlite:") else path.is_dir()


def require_storage(url: str) -> None:
    """For commands that read a study: a `UsageError` if a local storage is not there, or
    is another database (opening it would create an empty database, or Optuna's tables in
    that one)."""
    if not local_store_exists(url):
        raise UsageError(f"no Optuna storage at {mask_password(url)}; run `sweep run` first or pass the right --storage")
    _require_table(url, "studies", "an Optuna storage", "pass the --storage (or SWEEP_STORAGE) that `sweep run` used")


def is_tracking_server(uri: str) -> bool:
    """An MLflow tracking server (its REST API), not a store sweep opens itself."""
    return uri.startswith(("http://", "https://"))


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


def follow_copied_artifacts(tracking_uri: str, experiment_id: str) -> str | None:
    """A copied or moved project: point its experiment's artifact paths at its own `mlruns`.

    MLflow stores artifact locations as absolute paths (its default root `./mlruns`, resolved
    when the experiment was made), so a copied `mlflow.db` would read the study's baseline
    weights from, and write new artifacts to, the original folder, or fail once that folder
    is gone. When the store is a local SQLite file whose folder holds `mlruns/<experiment>`
    while the experiment points elsewhere, the experiment's, its runs' and its logged models'
    paths are rewritten to that folder (MLflow's schema: `experiments.artifact_location`,
    `runs.artifact_uri`, `logged_models.artifact_location`). Returns the old location, or
    None when nothing was moved. Model Registry versions keep their paths."""
    import sqlite3

    path = local_store_path(tracking_uri)
    if path is None or not tracking_uri.startswith("sqlite:") or not path.is_file():
        return None
    own = (path.resolve().parent / "mlruns" / experiment_id)
    try:
        return _rewrite_artifact_paths(path, experiment_id, own)
    except sqlite3.Error as error:  # the study goes on; its artifacts stay where they were
        print(f"warning: could not point the copied MLflow store {path} at {own}: {error}", file=sys.stderr)
        return None


def _rewrite_artifact_paths(path: Path, experiment_id: str, own: Path) -> str | None:
    import sqlite3

    with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT)) as db, db:
        row = db.execute("SELECT artifact_location FROM experiments WHERE experiment_id = ?", (experiment_id,)).fetchone()
        old = row[0] if row else None
        if not old or not own.is_dir():
            return None
        where = Path(old.removeprefix("file://"))
        if not where.is_absolute() or where == own:
            return None
        new = f"{'file://' if old.startswith('file://') else ''}{own}"
        moved = "? || substr({0}, length(?) + 1)"
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new, experiment_id))
        for table, column in (("runs", "artifact_uri"), ("logged_models", "artifact_location")):
            db.execute(f"UPDATE {table} SET {column} = {moved.format(column)} "
                       f"WHERE experiment_id = ? AND substr({column}, 1, length(?)) = ?",
                       (new, old, experiment_id, old, old))
    return old


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


def read_only_uri(uri: str) -> str:
    """`uri` opened so that nothing can write through it, where that is possible (a SQLite
    file, as SQLite's `mode=ro`): a command that only reads then cannot even create the
    tables or default experiment MLflow makes on open. Other stores come back unchanged.

    SQLite takes `mode=ro` only in its URI form (`file:` and `uri=true` for SQLAlchemy).
    The path is percent-encoded twice, once for SQLAlchemy's URL and once for SQLite's URI,
    so no character in it is read as URI syntax, and no `/` is left in the URL: MLflow makes
    the parent folder of what follows `sqlite:///`, which would be a folder named `file:`.
    """
    from urllib.parse import quote

    path = local_store_path(uri)
    if path is None or not uri.startswith("sqlite:"):
        return uri
    return f"sqlite:///file:{quote(quote(str(path.resolve()), safe=''), safe='')}?mode=ro&uri=true"


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
        engine = create_engine(url, connect_args=_connect_timeout(parsed.drivername))
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
    engine = create_engine(url, connect_args=_connect_timeout(parsed.drivername))
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


def _connect_timeout(drivername: str) -> dict[str, int]:
    return {"connect_timeout": 10} if drivername.startswith(("postgresql", "mysql")) else {}


def _check_folder(folder: Path, url: str, fix: str) -> None:
    if not folder.is_dir():
        raise UsageError(f"the folder {folder} of {mask_password(url)} does not exist; create it or fix {fix}")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"the folder {folder} of {mask_password(url)} is not writable; fix {fix}")


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
    engine = create_engine(url, connect_args=_connect_timeout(parsed.drivername))
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


def study_rows(url: str) -> list[dict[str, Any]]:
    """A row per study in the storage at `url`: trial counts by state, objectives and best values."""
    import optuna

    rows = []
    require_storage(url)
    opened = open_storage(url)  # one engine for all studies
    for summary in optuna.get_all_study_summaries(opened, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=opened)
        trials = study.get_trials(deepcopy=False)
        states = {state.name.lower(): sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
        done = [t for t in trials if "metrics" in t.user_attrs and t.state.name == "COMPLETE"]
        rows.append({
            "study": summary.study_name,
            "objectives": ",".join(study.user_attrs.get("objectives", [])),
            "complete": states["complete"], "running": states["running"],
            "failed": states["fail"], "pruned": states["pruned"],
            "best_val_accuracy": max((t.user_attrs["metrics"]["val_accuracy"] for t in done), default=None),
            "smallest_compressed_bytes": min((t.user_attrs["metrics"]["compressed_bytes"] for t in done), default=None),
        })
    return rows


def mask_password(url: str) -> str:
    """`postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`, for any scheme.

    The password runs from the first `:` after the user to the last `@` of the URL, so it
    may hold `#`, `/`, `?` (SQLAlchemy accepts them; `urlsplit` fails or stops early there)
    and even `@`. URLs without a password (`sqlite:///a:b@c.db`, `http://host`) come back
    unchanged; one with an `@` in its path or query may be masked more than needed.
    """
    scheme, separator, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not separator or not at or not colon or "/" in user:
        return url
    return f"{scheme}://{user}:***@{host}"


def error_summary(error: BaseException) -> str:
    """The first line of an error (a store's driver error rather than SQLAlchemy's wrapper),
    with any password in a URL it quotes masked."""
    cause = getattr(error, "orig", None) or error  # sqlalchemy wraps the driver's error
    lines = str(cause).strip().splitlines()
    return mask_passwords_in(lines[0]) if lines else type(cause).__name__


_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s@]*@")


# Environment variables whose values are secrets: the credentials MLflow's client and libpq read
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "PGPASSWORD")
MIN_MASKED_LENGTH = 4  # a shorter value would mask pieces of ordinary words


def mask_passwords_in(text: str) -> str:
    """Every `scheme://user:password@` in free text (an error message) as `scheme://user:***@`,
    and the value of every `SECRET_VARIABLES` set, as `***`."""
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    for name in SECRET_VARIABLES:
        if len(value := os.environ.get(name, "")) >= MIN_MASKED_LENGTH:
            text = text.replace(value, "***")
    return text
