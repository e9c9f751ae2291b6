"""The study file: one typed, validated schema, checked completely before any work starts.

A study file is YAML. Every key but `name` has a default, so this is a complete study::

    name: my-first-study

Unknown keys, wrong types and impossible values raise `ConfigError` with the key's
path in a one-line message, e.g. ``search.end_step: must be greater than
begin_step (0.3), got 0.2``.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from sweep.errors import ConfigError, brief

SCHEDULES = ("polynomial", "constant", "step")
BUILTIN_BUILDERS = ("mlp", "cnn")
# objective name -> (metric it reads, Optuna direction)
# unstructured, M:N (M non-zeros in every N consecutive weights) or an RxC block
PATTERN = re.compile(r"^(?:unstructured|(?P<m>\d+):(?P<n>\d+)|(?P<rows>\d+)x(?P<cols>\d+))$")
# all: every layer tfmot can prune; xnnpack: tfmot's PruneForLatencyOnXNNPack
POLICIES = ("all", "xnnpack")
STEP_PARAM = re.compile(r"^step_(level|position)_[1-9][0-9]*$")
# Minimised objectives are sizes and latencies, measured against the dense baseline's.
Direction = Literal["minimize", "maximize"]
OBJECTIVES: dict[str, tuple[str, Direction]] = {
    "accuracy": ("val_accuracy", "maximize"),
    "compressed_size": ("compressed_bytes", "minimize"),
    "sparsity": ("sparsity", "maximize"),
    "int8_accuracy": ("int8_val_accuracy", "maximize"),
    "int8_size": ("int8_gzip_bytes", "minimize"),  # download size: pruning shows there, not in the file
    "int8_file_size": ("int8_bytes", "minimize"),  # flash size: shrinks only with export.int8_storage: sparse
    "latency": ("latency_ms", "minimize"),
    "int8_latency": ("int8_latency_ms", "minimize"),
}
Objective = Literal["accuracy", "compressed_size", "sparsity", "int8_accuracy", "int8_size", "int8_file_size",
                    "latency", "int8_latency"]
# How model_int8.tflite stores its pruned tensors (sweep.modeling.tflite.shipped)
Int8Storage = Literal["dense", "sparse", "smallest"]


# --- search values: a scalar fixes a value, [low, high] searches a range --------------


@dataclass(frozen=True)
class Span:
    """A searched numeric range; `low == high` means the value is fixed."""

    low: float
    high: float

    @property
    def fixed(self) -> bool:
        return self.low == self.high


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)  # math.isfinite overflows on huge ints


def _parse_span(value: Any, integer: bool) -> Span:
    kind = "an integer" if integer else "a finite number"
    if isinstance(value, Span):
        return value
    ok = (lambda v: isinstance(v, int) and not isinstance(v, bool)) if integer else _is_number
    if ok(value):
        return Span(value, value)
    if isinstance(value, list | tuple) and len(value) == 2 and all(ok(v) for v in value):
        low, high = value
        if not low < high:
            raise ValueError(
                f"range [{low}, {high}] is empty or inverted; write [low, high] with low < high, "
                f"or a single value to fix it"
            )
        return Span(low, high)
    raise ValueError(f"expected {kind} or a [low, high] range, got {brief(value)}")


def _dump_span(span: Span) -> float | list[float]:
    return span.low if span.fixed else [span.low, span.high]


FloatSpan = Annotated[
    Span, BeforeValidator(lambda v: _parse_span(v, integer=False)), PlainSerializer(_dump_span, return_type=Any)
]
IntSpan = Annotated[
    Span, BeforeValidator(lambda v: _parse_span(v, integer=True)), PlainSerializer(_dump_span, return_type=Any)
]


def _names(value: Any, what: str) -> tuple[str, ...]:
    """A scalar fixes a choice, a list searches it."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"expected a {what} or a list of them, got {brief(value)}")
    if len(set(names)) != len(names):
        raise ValueError(f"lists a {what} twice: {names}")
    return tuple(names)


def _parse_schedules(value: Any) -> tuple[str, ...]:
    names = _names(value, "schedule name")
    if unknown := [n for n in names if n not in SCHEDULES]:
        raise ValueError(f"unknown schedule {brief(unknown[0])}; choose from {', '.join(SCHEDULES)}")
    return names


def _parse_patterns(value: Any) -> tuple[str, ...]:
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, int) and not isinstance(item, bool) and item >= 60:
            # YAML 1.1 reads an unquoted 2:4 as a base-60 number: 2 * 60 + 4
            raise ValueError(f"got the number {item}, which is how YAML reads an unquoted "
                             f"{item // 60}:{item % 60}; quote it: \"{item // 60}:{item % 60}\"")
    names = _names(value, "sparsity pattern")
    for name in names:
        match = PATTERN.match(name)
        if not match:
            raise ValueError(f"unknown sparsity pattern {brief(name)}; use unstructured, \"M:N\" (M non-zeros "
                             f"in every N weights, e.g. \"2:4\") or a block \"RxC\" (e.g. \"1x4\")")
        if match["m"] and not 0 < int(match["m"]) < int(match["n"]):
            raise ValueError(f"pattern {name}: M non-zeros of N needs 0 < M < N, e.g. \"2:4\"")
        if match["rows"] and (int(match["rows"]) < 1 or int(match["cols"]) < 1 or name == "1x1"):
            raise ValueError(f"pattern {name}: a block needs at least 1x2 or 2x1 weights (1x1 is unstructured)")
    return names


def _parse_policies(value: Any) -> tuple[str, ...]:
    names = _names(value, "pruning policy")
    if unknown := [n for n in names if n not in POLICIES]:
        raise ValueError(f"unknown pruning policy {brief(unknown[0])}; choose from {', '.join(POLICIES)}")
    return names


def _dump_names(names: tuple[str, ...]) -> Any:
    return names[0] if len(names) == 1 else list(names)


ScheduleChoice = Annotated[tuple[str, ...], BeforeValidator(_parse_schedules), PlainSerializer(_dump_names, return_type=Any)]
PatternChoice = Annotated[tuple[str, ...], BeforeValidator(_parse_patterns), PlainSerializer(_dump_names, return_type=Any)]
PolicyChoice = Annotated[tuple[str, ...], BeforeValidator(_parse_policies), PlainSerializer(_dump_names, return_type=Any)]


def _field_error(field: str, message: str) -> ValueError:
    """A cross-field error that `_format_error` attributes to `field`, not to the section."""
    return ValueError(f"{field}: {message}")


def _check_within(span: Span, low: float, high: float, *, closed_high: bool, what: str) -> Span:
    too_high = span.high > high if closed_high else span.high >= high
    if span.low < low or too_high:
        bracket = "]" if closed_high else ")"
        raise ValueError(f"{what} must be in [{low:g}, {high:g}{bracket}, got {brief(_dump_span(span))}")
    return span


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# --- sections ------------------------------------------------------------------------


class DataConfig(_Strict):
    # digits | mnist | fashion_mnist | cifar10 | npz (path: a file with x_train, y_train,
    # x_test, y_test) | directory (path: an image folder) | loader (set by `loader:`)
    dataset: Literal["digits", "mnist", "fashion_mnist", "cifar10", "npz", "directory", "loader"] = "digits"
    # npz: the file; directory: a folder of class subfolders, or with train/ and test/ (and
    # optionally validation/) folders of them. Relative to the study file.
    path: str | None = None
    # "file.py:function" | "pkg.module:function" returning {"train": ..., "test": ...,
    # optional "validation": ...}, each (x, y) arrays or an unbatched tf.data.Dataset of (x, y)
    loader: str | None = None
    # directory only: [height, width] the images are resized to
    image_size: Annotated[tuple[int, int], BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)] | None = None
    color_mode: Literal["rgb", "grayscale"] | None = None  # directory only; default rgb
    num_classes: int | None = Field(None, ge=2)  # default: the largest label + 1
    # fraction of the training data held out for validation when the data has no validation
    # split; objectives never see the test set
    validation_split: float = Field(0.2, gt=0.0, lt=1.0)

    @model_validator(mode="before")
    @classmethod
    def _loader_implies_dataset(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("loader") is not None and "dataset" not in raw:
            return {**raw, "dataset": "loader"}
        return raw

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, path: str | None, info: ValidationInfo) -> str | None:
        if path is None:
            return None
        resolved = _resolve(path, info)
        if _checks_files(info):
            if info.data.get("dataset") == "directory":
                if not resolved.is_dir():
                    raise ValueError(f"no such folder: {resolved}")
            elif not resolved.is_file():
                raise ValueError(f"no such file: {resolved}")
        return str(resolved)

    @field_validator("loader")
    @classmethod
    def _loader_exists(cls, loader: str | None, info: ValidationInfo) -> str | None:
        return None if loader is None else _code_spec(loader, info)

    @field_validator("image_size")
    @classmethod
    def _positive_sizes(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is not None and min(size) < 1:
            raise ValueError(f"expected [height, width] in pixels, got {brief(list(size))}")
        return size

    @model_validator(mode="after")
    def _keys_match_dataset(self) -> DataConfig:
        needs_path = {"npz": "a path to a .npz file", "directory": "a path to an image folder"}
        if self.dataset in needs_path and self.path is None:
            raise _field_error("path", f"dataset {self.dataset!r} needs {needs_path[self.dataset]}")
        if self.dataset not in needs_path and self.path is not None:
            raise _field_error("path", f"only used with dataset 'npz' or 'directory', not {self.dataset!r}")
        if self.dataset == "loader" and self.loader is None:
            raise _field_error("loader", "dataset 'loader' needs loader: 'file.py:function'")
        if self.dataset != "loader" and self.loader is not None:
            raise _field_error("loader", f"replaces the dataset; remove dataset: {self.dataset}")
        if self.dataset == "directory" and self.image_size is None:
            raise _field_error("image_size", "dataset 'directory' needs image_size: [height, width]")
        for key in ("image_size", "color_mode"):
            if self.dataset != "directory" and getattr(self, key) is not None:
                raise _field_error(key, f"only used with dataset 'directory', not {self.dataset!r}")
        return self


class PruneConfig(_Strict):
    # regular expressions on layer names (re.search), e.g. include: "^conv", exclude: "logits";
    # layers tfmot cannot prune (Rescaling, BatchNorm, custom layers) are never wrapped
    include: str | None = None
    exclude: str | None = None

    @field_validator("include", "exclude")
    @classmethod
    def _is_regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"not a regular expression ({error}), got {brief(pattern)}") from None
        return pattern


class ModelConfig(_Strict):
    # mlp | cnn | "pkg.module:function" | "path/to/file.py:function" (relative to the study file);
    # a custom builder is build(input_shape, num_classes) -> uncompiled tf_keras.Model
    builder: str | None = "cnn"
    # or a trained model (.keras, .h5 or a SavedModel folder; relative to the study file): its
    # own weights are the baseline, and every trial prunes and fine-tunes it
    pretrained: str | None = None
    # "file.py" | "pkg.module" imported before loading `pretrained`: registers its custom layers
    custom_objects: str | None = None
    # builder models: trials prune the dense baseline's trained weights (baseline) or train
    # from newly initialised weights (scratch)
    start: Literal["scratch", "baseline"] = "baseline"
    prune: PruneConfig = PruneConfig()  # which layers trials prune

    @model_validator(mode="before")
    @classmethod
    def _builder_or_pretrained(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or raw.get("pretrained") is None:
            return raw
        if raw.get("builder") is not None:
            raise ValueError("builder: give either builder or pretrained, not both")
        if raw.get("start", "baseline") != "baseline":
            raise ValueError("start: a pretrained model always starts from its own weights; remove start")
        return {**raw, "builder": None}

    @field_validator("builder")
    @classmethod
    def _builder_exists(cls, builder: str | None, info: ValidationInfo) -> str | None:
        if builder is None or builder in BUILTIN_BUILDERS:
            return builder
        return _code_spec(builder, info, also="".join(f"{name}, " for name in BUILTIN_BUILDERS))

    @field_validator("pretrained")
    @classmethod
    def _model_exists(cls, pretrained: str | None, info: ValidationInfo) -> str | None:
        if pretrained is None:
            return None
        path = _resolve(pretrained, info)
        if _checks_files(info) and not path.exists():
            raise ValueError(f"no such file or SavedModel folder: {path}")
        return str(path)

    @field_validator("custom_objects")
    @classmethod
    def _module_exists(cls, target: str | None, info: ValidationInfo) -> str | None:
        return None if target is None else _code_target(target, info)

    @model_validator(mode="after")
    def _one_model(self) -> ModelConfig:
        if self.builder is None and self.pretrained is None:
            raise _field_error("builder", "give a builder (mlp, cnn, 'file.py:function') or a pretrained model file")
        if self.custom_objects is not None and self.pretrained is None:
            raise _field_error("custom_objects", "only used with pretrained; a builder imports its own layers")
        return self


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(0.001, gt=0.0)
    # TensorFlow op determinism: a rerun reproduces a trial exactly. Some GPU ops have no
    # deterministic kernel; set false to use them, and reruns compare within a tolerance.
    deterministic: bool = True


class SearchConfig(_Strict):
    schedule: ScheduleChoice = ("polynomial", "constant", "step")
    final_sparsity: FloatSpan = Span(0.5, 0.95)
    initial_sparsity: FloatSpan = Span(0.0, 0.5)  # polynomial only
    begin_step: FloatSpan = Span(0.0, 0.3)  # fraction of the total training steps
    end_step: FloatSpan = Span(0.5, 1.0)  # fraction of the total training steps
    power: FloatSpan = Span(1.0, 6.0)  # polynomial only
    frequency: IntSpan = Span(5, 50)  # prune every N steps
    breakpoints: IntSpan = Span(2, 4)  # step only: number of sparsity levels
    weight_decay: FloatSpan = Span(1.0e-6, 1.0e-2)  # searched on a log scale
    # step only, optional: `step_level_<i>` / `step_position_<i>` keys (each in [0, 1],
    # default [0, 1]) narrow or fix one level or level start; `sweep best --format yaml` uses them
    step_params: dict[str, FloatSpan] = {}
    # Structure of the sparsity (sweep/search/structure.py); searched only when set to more than the default
    pattern: PatternChoice = ("unstructured",)
    policy: PolicyChoice = ("all",)
    per_layer: bool = False  # each layer its own target, allocated by the searched `allocation`
    allocation: FloatSpan = Span(0.0, 1.0)  # per_layer only: 0 uniform, 1 Erdős–Rényi-kernel

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        raw = {**raw, **_fitted_defaults(raw)}
        step_keys = [k for k in raw if isinstance(k, str) and STEP_PARAM.match(k)]
        if not step_keys:
            return raw
        rest = {k: v for k, v in raw.items() if k not in step_keys}
        return {**rest, "step_params": {k: raw[k] for k in step_keys}}

    @field_validator("step_params")
    @classmethod
    def _step_params_in_unit_interval(cls, params: dict[str, Span]) -> dict[str, Span]:
        for name, span in params.items():
            if span.low < 0 or span.high > 1:
                raise _field_error(name, f"must be in [0, 1], got {brief(_dump_span(span))}")
        return params

    @model_serializer(mode="wrap")
    def _flatten_step_params(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {**{k: v for k, v in data.items() if k != "step_params"}, **data.get("step_params", {})}

    @field_validator("final_sparsity", "initial_sparsity")
    @classmethod
    def _sparsity_in_unit_interval(cls, span: Span) -> Span:
        return _check_within(span, 0.0, 1.0, closed_high=False, what="sparsity")

    @field_validator("begin_step")
    @classmethod
    def _begin_fraction(cls, span: Span) -> Span:
        return _check_within(span, 0.0, 1.0, closed_high=False, what="a fraction of training")

    @field_validator("end_step")
    @classmethod
    def _end_fraction(cls, span: Span) -> Span:
        if span.low <= 0:
            raise ValueError(f"must be greater than 0, got {brief(_dump_span(span))}")
        return _check_within(span, 0.0, 1.0, closed_high=True, what="a fraction of training")

    @field_validator("power")
    @classmethod
    def _power_positive(cls, span: Span) -> Span:
        if span.low <= 0:
            raise ValueError(f"must be greater than 0, got {brief(_dump_span(span))}")
        return span

    @field_validator("frequency")
    @classmethod
    def _frequency_positive(cls, span: Span) -> Span:
        if span.low < 1:
            raise ValueError(f"must be at least 1 step, got {brief(_dump_span(span))}")
        return span

    @field_validator("breakpoints")
    @classmethod
    def _at_least_two_levels(cls, span: Span) -> Span:
        if span.low < 2:
            raise ValueError(
                f"must be at least 2 sparsity levels (1 level is the constant schedule), "
                f"got {brief(_dump_span(span))}"
            )
        return span

    @field_validator("allocation")
    @classmethod
    def _allocation_in_unit_interval(cls, span: Span) -> Span:
        return _check_within(span, 0.0, 1.0, closed_high=True, what="an allocation exponent")

    @field_validator("weight_decay")
    @classmethod
    def _weight_decay_log_scale(cls, span: Span) -> Span:
        if span.low < 0:
            raise ValueError(f"must not be negative, got {brief(_dump_span(span))}")
        if not span.fixed and span.low == 0:
            raise ValueError(
                f"a range is searched on a log scale, so its low end must be greater than 0, "
                f"got {brief(_dump_span(span))}; use e.g. [1.0e-6, {span.high:g}] or fix it to 0"
            )
        return span

    @model_validator(mode="after")
    def _ranges_agree(self) -> SearchConfig:
        if self.end_step.low <= self.begin_step.high:
            raise _field_error(
                "end_step",
                f"must be greater than begin_step ({self.begin_step.high:g}), "
                f"got {self.end_step.low:g}",
            )
        if "polynomial" in self.schedule and self.initial_sparsity.high > self.final_sparsity.low:
            raise _field_error(
                "initial_sparsity",
                f"must not exceed final_sparsity ({self.final_sparsity.low:g}), "
                f"got {self.initial_sparsity.high:g}",
            )
        return self


def _fitted_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """Defaults for the keys of a linked pair that the user left out, fitted to the value
    they wrote, so a default never makes a valid study invalid: `final_sparsity: [0.3,
    0.95]` gets `initial_sparsity: [0, 0.3]`, not a refusal of the default [0, 0.5].
    Only values the user wrote can then be refused by `_ranges_agree`."""

    def written(key: str) -> Span | None:
        try:
            span = _parse_span(raw[key], integer=False) if key in raw else None
        except ValueError:
            return None  # reported by the field's own validator
        if span is None or not (0 <= span.low and span.high <= 1):
            return None  # likewise: a default is fitted only to a value that can stand
        return span

    default = {k: SearchConfig.model_fields[k].default for k in ("final_sparsity", "initial_sparsity",
                                                                  "begin_step", "end_step")}
    final, initial = written("final_sparsity"), written("initial_sparsity")
    begin, end = written("begin_step"), written("end_step")
    fitted: dict[str, Span] = {}
    if final is not None and initial is None:  # initial must not exceed final
        fitted["initial_sparsity"] = Span(0.0, min(default["initial_sparsity"].high, final.low))
    if initial is not None and final is None:
        low = max(default["final_sparsity"].low, initial.high)
        fitted["final_sparsity"] = Span(low, max(default["final_sparsity"].high, low))
    if end is not None and begin is None:  # pruning must begin before it ends
        fitted["begin_step"] = Span(0.0, min(default["begin_step"].high, end.low / 2))
    if begin is not None and end is None and begin.high < 1:
        low = max(default["end_step"].low, (begin.high + 1) / 2) if begin.high >= default["end_step"].low \
            else default["end_step"].low
        fitted["end_step"] = Span(low, max(default["end_step"].high, low))
    return {key: _dump_span(span) for key, span in fitted.items()}


class ConstraintsConfig(_Strict):
    # trials whose val_accuracy is below this are infeasible (Optuna constraints_func)
    min_accuracy: float | None = Field(None, ge=0.0, le=1.0)
    # ... or more than this below the dense baseline's val_accuracy (0.02: two points)
    max_accuracy_drop: float | None = Field(None, ge=0.0, le=1.0)

    def floor(self, baseline_accuracy: float) -> float | None:
        """The lowest val_accuracy a feasible trial may have: the higher of the two limits."""
        drop = None if self.max_accuracy_drop is None else baseline_accuracy - self.max_accuracy_drop
        limits = [limit for limit in (self.min_accuracy, drop) if limit is not None]
        return max(limits) if limits else None


class ExportConfig(_Strict):
    # dense: every LiteRT interpreter runs it; sparse: the converter's sparse encoding, which
    # LiteRT's default XNNPack delegate refuses; smallest: sparse where that is smaller (the
    # only storage before `export` existed)
    int8_storage: Int8Storage = "dense"


class StudyConfig(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    seed: int = Field(0, ge=0, le=2**32 - 1)  # NumPy and TensorFlow take 32-bit seeds
    n_trials: int = Field(20, ge=1)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    search: SearchConfig = SearchConfig()
    objectives: list[Objective] = Field(
        ["accuracy", "compressed_size"], min_length=1
    )
    constraints: ConstraintsConfig = ConstraintsConfig()
    export: ExportConfig = ExportConfig()
    # stop trials during training that other trials already beat (sweep/search/early_stopping.py)
    early_stopping: bool = False
    sampler: Literal["tpe", "nsga2", "gp", "random"] = "tpe"
    _folder: Path = PrivateAttr(default_factory=Path.cwd)  # see `folder`

    @field_validator("objectives")
    @classmethod
    def _unique_objectives(cls, objectives: list[str]) -> list[str]:
        if len(set(objectives)) != len(objectives):
            raise ValueError(f"lists an objective twice: {objectives}")
        return objectives

    @model_validator(mode="after")
    def _int8_file_size_needs_sparse_storage(self) -> StudyConfig:
        if "int8_file_size" in self.objectives and self.export.int8_storage == "dense":
            raise _field_error("objectives", "int8_file_size is the same for every trial with "
                               "export.int8_storage: dense (a dense file's size does not shrink with pruning); "
                               "minimise int8_size (its gzip), or set export.int8_storage: sparse")
        return self

    @model_validator(mode="after")
    def _remember_folder(self, info: ValidationInfo) -> StudyConfig:
        self._folder = Path((info.context or {}).get("base_dir", ".")).resolve()
        return self

    @property
    def directions(self) -> list[Direction]:
        return [OBJECTIVES[o][1] for o in self.objectives]

    @property
    def objective_metrics(self) -> list[str]:
        return [OBJECTIVES[o][0] for o in self.objectives]

    @property
    def folder(self) -> Path:
        """The study file's folder, which its relative paths were resolved against."""
        return self._folder

    def stored(self) -> dict[str, Any]:
        """The study as `sweep run` stores it: every default filled in, paths inside the study
        file's folder relative to it, so a copied or moved project finds its own files
        (`parse_stored_config`); a path outside it (a shared dataset) stays absolute."""

        def relative_inside(path: str) -> str:
            inside = Path(path).is_relative_to(self.folder)
            return os.path.relpath(path, self.folder) if inside else path

        return _map_files(self.model_dump(mode="json"), relative_inside)

    def to_yaml(self) -> str:
        """The resolved study: every default filled in, paths absolute, so the file works
        wherever it is written (an export folder, stdout, an MLflow artifact)."""
        return yaml.dump(self.model_dump(mode="json"), Dumper=_YamlDumper, sort_keys=False)


# --- loading -------------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-6` as a float, as YAML 1.2 does (PyYAML reads a string)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


class _YamlDumper(yaml.SafeDumper):
    """Block style for sections, flow style for ranges: `final_sparsity: [0.5, 0.95]`."""


_YamlDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def load_study_config(path: str | Path) -> StudyConfig:
    """Read and validate a study file; raises `ConfigError` naming the offending key.

    >>> config = load_study_config("studies/quickstart.yaml")
    >>> config.objectives
    ['accuracy', 'compressed_size']
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such study file")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start}: {error.object[error.start:error.start + 1]!r}); "
            f"save the study file as UTF-8"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_study_config(raw, base_dir=path.parent, source=str(path))


def parse_study_config(
    raw: Any, base_dir: Path = Path("."), source: str = "study", check_files: bool = True
) -> StudyConfig:
    """Validate an already-parsed study mapping (see `load_study_config`). `check_files`
    False accepts files that no longer exist (a stored study's, read for its values)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys like 'name:', got {brief(raw)}")
    try:
        return StudyConfig.model_validate(raw, context={"base_dir": base_dir, "check_files": check_files})
    except ValidationError as error:
        raise ConfigError(f"{source}: {_format_error(error)}") from None


# Keys added since a study could have been stored, with the value such a study ran with:
# a stored study file has every key, so a missing one means an older sweep wrote it.
STORED_BEFORE = {("model", "start"): "scratch", ("export", "int8_storage"): "smallest"}
# Objectives whose meaning changed with the `export` section: a study stored without one
# ran `int8_size` on the raw file's size.
RENAMED_BEFORE_EXPORT = {"int8_size": "int8_file_size"}


def _stored_before_export(study: dict[str, Any]) -> bool:
    return "export" not in study


def _renamed_before_export(objectives: Sequence[str]) -> list[str]:
    return [RENAMED_BEFORE_EXPORT.get(o, o) for o in objectives]


def parse_stored_config(raw: Any, source: str, folder: Path = Path(".")) -> StudyConfig:
    """A study file as `sweep run` stored it, read with the values it ran with, its paths
    resolved against `folder` (the study file's: a copied project uses its own files).
    Older studies stored absolute paths, which stay as they are. Its files may be gone:
    reading its values does not need them."""
    if isinstance(raw, dict):
        raw = {**raw}
        if _stored_before_export(raw) and isinstance(raw.get("objectives"), list):
            raw["objectives"] = _renamed_before_export(raw["objectives"])
        for (section, key), value in STORED_BEFORE.items():
            part = raw.get(section, {})  # a section added since is missing whole
            if isinstance(part, dict) and key not in part:
                raw[section] = {**part, key: value}
    return parse_study_config(raw, base_dir=folder, source=source, check_files=False)


def inherit_stored_values(config: StudyConfig, stored: Any) -> StudyConfig:
    """`config` resuming a study an older sweep stored: a key added since, which the study
    file leaves out, keeps the value the study ran with (`STORED_BEFORE`), not the new
    default, and an objective renamed since keeps its stored meaning
    (`RENAMED_BEFORE_EXPORT`), so the unchanged study file still resumes its study."""
    if not isinstance(stored, dict):
        return config
    if _stored_before_export(stored) and "int8_storage" not in config.export.model_fields_set:
        config = config.model_copy(update={"objectives": _renamed_before_export(config.objectives)})
    for (section, key), value in STORED_BEFORE.items():
        part, stored_part = getattr(config, section), stored.get(section, {})
        if isinstance(stored_part, dict) and key not in stored_part and key not in part.model_fields_set:
            config = config.model_copy(update={section: part.model_copy(update={key: value})})
    return config


def _format_error(error: ValidationError) -> str:
    first = error.errors()[0]
    location = [str(part) for part in first["loc"] if part != "step_params"]  # flat in the file
    message = first["msg"].removeprefix("Value error, ")
    if match := re.match(r"^(\w+): (.*)$", message):  # raised by _field_error
        location.append(match.group(1))
        message = match.group(2)
    if first["type"] == "extra_forbidden":
        message = f"unknown key; expected one of: {', '.join(_allowed_keys(location[:-1]))}"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif first["type"] in ("literal_error", "enum") or "input" in first and first["type"].endswith(("_type", "than", "than_equal", "finite_number")):
        message = f"{message}, got {brief(first['input'])}"
    more = error.error_count() - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{'.'.join(location) or 'study'}: {message}{suffix}"


def _allowed_keys(section: list[str]) -> list[str]:
    model: type[BaseModel] = StudyConfig
    for key in section:
        model = model.model_fields[key].annotation  # type: ignore[assignment]
    keys = list(model.model_fields)
    if "step_params" in keys:
        keys[keys.index("step_params")] = "step_level_<i>, step_position_<i>"
    return keys


# Keys that can name files, relative to the study file: paths, and code given as
# "file.py:function" or "file.py" (a "pkg.module:function" or a built-in builder names none).
PATH_KEYS = (("data", "path"), ("model", "pretrained"))
CODE_KEYS = (("data", "loader"), ("model", "builder"), ("model", "custom_objects"))


def _map_files(dumped: dict[str, Any], change: Callable[[str], str]) -> dict[str, Any]:
    """A dumped study with `change` applied to every file path it names."""
    dumped = {**dumped}
    for section, key in (*PATH_KEYS, *CODE_KEYS):
        part = dumped.get(section)
        value = part.get(key) if isinstance(part, dict) else None
        if isinstance(part, dict) and isinstance(value, str):
            dumped[section] = {**part, key: change(value) if (section, key) in PATH_KEYS else _map_code(value, change)}
    return dumped


def _map_code(spec: str, change: Callable[[str], str]) -> str:
    target, sep, function = spec.rpartition(":") if ":" in spec else (spec, "", "")
    return f"{change(target)}{sep}{function}" if target.endswith(".py") else spec


def _checks_files(info: ValidationInfo) -> bool:
    return bool((info.context or {}).get("check_files", True))


def _resolve(path: str, info: ValidationInfo) -> Path:
    base_dir = (info.context or {}).get("base_dir", Path("."))
    return (Path(base_dir) / Path(path).expanduser()).resolve()


def _code_spec(spec: str, info: ValidationInfo, also: str = "") -> str:
    """A "pkg.module:function" or "file.py:function" spec whose module or file exists and,
    for a file, defines the function (checked without running it); file paths made absolute."""
    target, sep, function = spec.rpartition(":")
    if not sep or not target or not function.isidentifier():
        raise ValueError(f"expected {also}'pkg.module:function' or 'file.py:function', got {brief(spec)}")
    target = _code_target(target, info)
    if target.endswith(".py") and _checks_files(info) and not _defines(Path(target), function):
        raise ValueError(f"{target} defines no top-level function {function!r}")
    return f"{target}:{function}"


def _code_target(target: str, info: ValidationInfo) -> str:
    """An importable module name, or an existing .py file made absolute."""
    if target.endswith(".py"):
        path = _resolve(target, info)
        if _checks_files(info) and not path.is_file():
            raise ValueError(f"no such file: {path}")
        return str(path)
    if not _checks_files(info):
        return target
    try:
        found = importlib.util.find_spec(target) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ValueError(f"cannot find module {target!r}; is it installed or on PYTHONPATH?")
    return target


def _defines(path: Path, name: str) -> bool:
    """Whether a Python file defines `name` at top level, without running the file."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError:
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return True
    return False


def load_study_name(path: str | Path) -> str:
    """Only the `name:` of a study file, for the commands that read a study's results
    (`sweep pareto`, `best`, `report`, `doctor`, `ui`, `dashboard`): they use the study file
    `sweep run` stored, so the data and model files this one names may have moved since.

    >>> load_study_name("studies/quickstart.yaml")
    'digits-quickstart'
    """
    try:
        raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_YamlLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raw = None
    if not isinstance(raw, dict) or "name" not in raw:
        return load_study_config(path).name  # raises the error that says what is wrong with the file
    return parse_study_config({"name": raw["name"]}, source=str(path), check_files=False).name
