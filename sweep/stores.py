"""Where results live: the Optuna storage and the MLflow tracking store.

Defaults are files in the working directory: `sqlite:///sweep.db` for Optuna and
MLflow 3's own default `sqlite:///mlflow.db`, so `mlflow ui` started there shows the
runs. `--storage`/`SWEEP_STORAGE` and `--tracking-uri`/`MLFLOW_TRACKING_URI` override
them; credentials belong in those environment variables, and any URL we print has
its password masked.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from sweep.errors import UsageError

if TYPE_CHECKING:
    import optuna

    from sweep.config import StudyConfig

DEFAULT_STORAGE = "sqlite:///sweep.db"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def storage_url(flag: str | None = None) -> str:
    return flag or os.environ.get("SWEEP_STORAGE") or DEFAULT_STORAGE


def tracking_uri(flag: str | None = None) -> str:
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage at `url`; a `UsageError` if it cannot be reached."""
    import optuna

    try:
        return optuna.storages.RDBStorage(url)
    except Exception as error:  # sqlalchemy raises many kinds; all mean "cannot use it"
        raise UsageError(
            f"cannot open the Optuna storage {mask_password(url)}: {_reason(error)}; "
            f"check the URL (--storage or SWEEP_STORAGE) and that the database is running"
        ) from None


def load_study(name: str, url: str) -> optuna.Study:
    """An existing study; a `UsageError` naming the fix if there is none of that name."""
    import optuna

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


def stored_config(study: optuna.Study) -> StudyConfig:
    """The resolved study file the study was run with (recorded by `sweep run`)."""
    from sweep.config import parse_study_config

    if "config" not in study.user_attrs:
        raise UsageError(f"study {study.study_name!r} was not created by sweep run (no stored config)")
    return parse_study_config(study.user_attrs["config"], source=f"study {study.study_name!r}")


def mask_password(url: str) -> str:
    """`postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@", 1)))


def _reason(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error  # sqlalchemy wraps the driver's error
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__
