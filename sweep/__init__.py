"""sweep: find the best way to prune a Keras model.

An Optuna study whose trials each train a model pruned with
`tfmot.sparsity.keras.prune_low_magnitude`, measure accuracy, achieved sparsity and
compressed size, and log everything to MLflow.

Importing `sweep` stays light: TensorFlow, tfmot and MLflow load only in the modules
that train or track (see `sweep._tf`).
"""

from sweep.config import StudyConfig, load_study_config
from sweep.errors import ConfigError, StudyAborted, SweepError, UsageError

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
