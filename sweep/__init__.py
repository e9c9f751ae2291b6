"""sweep: find the best way to prune a Keras model.

An Optuna study whose trials each train a model pruned with
`tfmot.sparsity.keras.prune_low_magnitude`, measure accuracy, achieved sparsity and
compressed size, and log everything to MLflow.

Importing `sweep` stays light: TensorFlow, tfmot and MLflow load only in the modules
that train or track (see `sweep._tf`). The study file's schema (pydantic) loads on first
use of `StudyConfig` or `load_study_config`: `python -m sweep --help` imports this package
and does not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sweep.errors import ConfigError, StudyAborted, SweepError, UsageError

if TYPE_CHECKING:
    from sweep.config import StudyConfig, load_study_config

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "StudyAborted",
    "StudyConfig",
    "SweepError",
    "UsageError",
    "__version__",
    "load_study_config",
]

_FROM_CONFIG = ("StudyConfig", "load_study_config")


def __getattr__(name: str) -> Any:
    if name in _FROM_CONFIG:
        import sweep.config

        return getattr(sweep.config, name)
    raise AttributeError(f"module 'sweep' has no attribute {name!r}")
