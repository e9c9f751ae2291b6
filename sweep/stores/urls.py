"""Where results live, as URLs: the Optuna storage and the MLflow tracking store, local
file or server, with any password masked in what we print.

Defaults are files in the working directory: `sqlite:///sweep.db` for Optuna and
MLflow 3's own default `sqlite:///mlflow.db`, so `mlflow ui` started there shows the
runs. `--storage`/`SWEEP_STORAGE` and `--tracking-uri`/`MLFLOW_TRACKING_URI` override
them; credentials belong in those environment variables, and any URL we print has
its password masked.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

DEFAULT_STORAGE = "sqlite:///sweep.db"


DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def storage_url(flag: str | None = None) -> str:
    return flag or os.environ.get("SWEEP_STORAGE") or DEFAULT_STORAGE


def tracking_uri(flag: str | None = None) -> str:
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


SQLITE_BUSY_TIMEOUT = 60  # seconds a writer waits for the lock: parallel workers queue, not fail


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


def is_tracking_server(uri: str) -> bool:
    """An MLflow tracking server (its REST API), not a store sweep opens itself."""
    return uri.startswith(("http://", "https://"))


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


def connect_timeout(drivername: str) -> dict[str, int]:
    return {"connect_timeout": 10} if drivername.startswith(("postgresql", "mysql")) else {}


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
