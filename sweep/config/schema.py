"""The study file: one typed, validated schema, checked completely before any work starts.

A study file is YAML. Every key but `name` has a default, so this is a complete study::

    name: my-first-study

Unknown keys, wrong types and impossible values raise `ConfigError` with the key's
path in a one-line message, e.g. ``search.end_step: must be greater than
begin_step (0.3), got 0.2``.
"""

from __future__ import annotations

import math
import os
import re
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
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from sweep.config.files import checks_files, code_spec, code_target, map_files, resolve
from sweep.errors import brief

SCHEDULES = ("polynomial", "constant", "step")
BUILTIN_BUILDERS = ("mlp", "cnn")
# objective name -> (metric it reads, Optuna direction)
# unstructured, M:N (M non-zeros in every N consecutive weights) or an RxC block
PATTERN = re.compile(r"^(?:unstructured|channels|(?P<m>\d+):(?P<n>\d+)|(?P<rows>\d+)x(?P<cols>\d+))$")
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
TfliteConverter = Literal["freeze", "savedmodel"]


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
            raise ValueError(f"unknown sparsity pattern {brief(name)}; use unstructured, channels (whole "
                             f"filters), \"M:N\" (M non-zeros in every N weights, e.g. \"2:4\") or a block "
                             f"\"RxC\" (e.g. \"1x4\")")
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
        resolved = resolve(path, info)
        if checks_files(info):
            if info.data.get("dataset") == "directory":
                if not resolved.is_dir():
                    raise ValueError(f"no such folder: {resolved}")
            elif not resolved.is_file():
                raise ValueError(f"no such file: {resolved}")
        return str(resolved)

    @field_validator("loader")
    @classmethod
    def _loader_exists(cls, loader: str | None, info: ValidationInfo) -> str | None:
        return None if loader is None else code_spec(loader, info)

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
        return code_spec(builder, info, also="".join(f"{name}, " for name in BUILTIN_BUILDERS))

    @field_validator("pretrained")
    @classmethod
    def _model_exists(cls, pretrained: str | None, info: ValidationInfo) -> str | None:
        if pretrained is None:
            return None
        path = resolve(pretrained, info)
        if checks_files(info) and not path.exists():
            raise ValueError(f"no such file or SavedModel folder: {path}")
        return str(path)

    @field_validator("custom_objects")
    @classmethod
    def _module_exists(cls, target: str | None, info: ValidationInfo) -> str | None:
        return None if target is None else code_target(target, info)

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
        if self.pattern == ("channels",) and self.policy != ("all",):
            raise _field_error("policy", "chooses the layers tfmot prunes, and channel trials use no tfmot wrapper; "
                                         "remove search.policy, or search another pattern beside channels")
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
    # How the TFLite files are made from the Keras model (sweep.modeling.tflite): freeze traces and
    # freezes its call, ten times faster on a MobileNetV2 than savedmodel, which saves and reloads
    # it as a SavedModel first, as TFLiteConverter.from_keras_model does (the only path before
    # this key existed); the files of both predict the same and carry a serving signature
    tflite_converter: TfliteConverter = "freeze"


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
    # stop trials during training that other trials already beat (sweep/search/early_stopping.py):
    # pruned (true): judged once their masks are final; planned: also from their first epochs,
    # by their planned size
    early_stopping: bool | Literal["pruned", "planned"] = False
    # needed: each trial measures what its objectives read and the cheap metrics; the other
    # deploy metrics (TFLite files, int8 accuracy, latency) only for the front's trials, from
    # their saved weights (sweep/modeling/metrics.py). all: everything on every trial
    measure: Literal["needed", "all"] = "needed"
    sampler: Literal["tpe", "nsga2", "gp", "random"] = "tpe"
    _folder: Path = PrivateAttr(default_factory=Path.cwd)  # see `folder`

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _known_early_rule(cls, value: object) -> object:
        if isinstance(value, bool) or value in ("pruned", "planned"):
            return value
        raise ValueError(f"{value!r} is not one of true, false, pruned, planned")

    @field_validator("objectives")
    @classmethod
    def _unique_objectives(cls, objectives: list[str]) -> list[str]:
        if len(set(objectives)) != len(objectives):
            raise ValueError(f"lists an objective twice: {objectives}")
        return objectives

    @model_validator(mode="after")
    def _int8_file_size_needs_sparse_storage(self) -> StudyConfig:
        if ("int8_file_size" in self.objectives and self.export.int8_storage == "dense"
                and "channels" not in self.search.pattern):
            raise _field_error("objectives", "int8_file_size is the same for every trial with "
                               "export.int8_storage: dense (a dense file's size does not shrink with pruning); "
                               "minimise int8_size (its gzip), search pattern: channels (removing channels "
                               "shrinks the file), or set export.int8_storage: sparse")
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
    def early_rule(self) -> Literal["pruned", "planned"] | None:
        """How trials are stopped early; None: never."""
        if self.early_stopping is False:
            return None
        return "pruned" if self.early_stopping is True else self.early_stopping

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

        return map_files(self.model_dump(mode="json"), relative_inside)

    def to_yaml(self) -> str:
        """The resolved study: every default filled in, paths absolute, so the file works
        wherever it is written (an export folder, stdout, an MLflow artifact)."""
        return yaml.dump(self.model_dump(mode="json"), Dumper=_YamlDumper, sort_keys=False)


class _YamlDumper(yaml.SafeDumper):
    """Block style for sections, flow style for ranges: `final_sparsity: [0.5, 0.95]`."""


_YamlDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)
