"""The study file: its schema (`schema`), the files and code it names (`files`), and how a
file or a stored study is read (`loading`). Checked completely before any work starts."""

from sweep.config.loading import (
    RENAMED_BEFORE_EXPORT,
    STORED_BEFORE,
    inherit_stored_values,
    load_study_config,
    load_study_name,
    parse_stored_config,
    parse_study_config,
)
from sweep.config.schema import (
    BUILTIN_BUILDERS,
    OBJECTIVES,
    PATTERN,
    ConstraintsConfig,
    DataConfig,
    ExportConfig,
    Int8Storage,
    ModelConfig,
    PruneConfig,
    SearchConfig,
    Span,
    StudyConfig,
    TfliteConverter,
    TrainConfig,
)

__all__ = [
    "BUILTIN_BUILDERS",
    "OBJECTIVES",
    "PATTERN",
    "RENAMED_BEFORE_EXPORT",
    "STORED_BEFORE",
    "ConstraintsConfig",
    "DataConfig",
    "ExportConfig",
    "Int8Storage",
    "ModelConfig",
    "PruneConfig",
    "SearchConfig",
    "Span",
    "StudyConfig",
    "TfliteConverter",
    "TrainConfig",
    "inherit_stored_values",
    "load_study_config",
    "load_study_name",
    "parse_stored_config",
    "parse_study_config",
]
