from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweep.config import Span, load_study_config, parse_study_config
from sweep.errors import ConfigError, UsageError


def test_name_alone_gives_the_documented_defaults() -> None:
    config = parse_study_config({"name": "x"})
    assert config.seed == 0 and config.n_trials == 20
    assert config.data.dataset == "digits" and config.data.validation_split == 0.2
    assert config.model.builder == "cnn"
    assert (config.train.epochs, config.train.batch_size, config.train.learning_rate) == (10, 32, 0.001)
    assert config.search.schedule == ("polynomial", "constant", "step")
    assert config.search.final_sparsity == Span(0.5, 0.95)
    assert config.search.weight_decay == Span(1e-6, 1e-2)
    assert config.objectives == ["accuracy", "compressed_size"]
    assert config.directions == ["maximize", "minimize"]
    assert config.constraints.min_accuracy is None and config.sampler == "tpe"


def test_scalar_fixes_a_value_and_single_schedule_name_is_a_choice() -> None:
    config = parse_study_config({"name": "x", "search": {"final_sparsity": 0.8, "schedule": "step"}})
    assert config.search.final_sparsity.fixed and config.search.final_sparsity.low == 0.8
    assert config.search.schedule == ("step",)


def test_resolved_yaml_round_trips(tmp_path: Path) -> None:
    config = parse_study_config({"name": "x", "search": {"frequency": 7, "schedule": "constant"}}, base_dir=tmp_path)
    path = tmp_path / "resolved.yaml"
    path.write_text(config.to_yaml())
    assert load_study_config(path) == config
    assert "final_sparsity: [0.5, 0.95]" in config.to_yaml()


def test_exponent_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nsearch:\n  weight_decay: [1e-6, 1e-3]\n")
    assert load_study_config(path).search.weight_decay == Span(1e-6, 1e-3)


def test_npz_path_and_builder_file_resolve_relative_to_the_study_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.npz").write_bytes(b"")
    (tmp_path / "net.py").write_text("def build(input_shape, num_classes):\n    pass\n")
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ndata: {dataset: npz, path: data/d.npz}\nmodel: {builder: 'net.py:build'}\n")
    config = load_study_config(path)
    assert config.data.path == str(tmp_path / "data" / "d.npz")
    assert config.model.builder == f"{tmp_path / 'net.py'}:build"


BAD_STUDIES = [
    ({}, "name: required key is missing"),
    ({"name": "x", "trian": {}}, "trian: unknown key; expected one of: name, seed"),
    ({"name": "x", "train": {"epoch": 3}}, "train.epoch: unknown key; expected one of: epochs, batch_size"),
    ({"name": "x", "train": {"epochs": "10"}}, "train.epochs: Input should be a valid integer, got '10'"),
    ({"name": "x", "train": {"epochs": 0}}, "train.epochs: Input should be greater than or equal to 1"),
    ({"name": "x", "train": {"learning_rate": -1}}, "train.learning_rate: Input should be greater than 0"),
    ({"name": "x", "search": {"final_sparsity": [0.9, 0.5]}}, "search.final_sparsity: range [0.9, 0.5] is empty or inverted"),
    ({"name": "x", "search": {"final_sparsity": [0.5, 0.5]}}, "search.final_sparsity: range [0.5, 0.5] is empty or inverted"),
    ({"name": "x", "search": {"final_sparsity": 1.0}}, "search.final_sparsity: sparsity must be in [0, 1), got 1.0"),
    ({"name": "x", "search": {"initial_sparsity": [-0.1, 0.2]}}, "search.initial_sparsity: sparsity must be in [0, 1)"),
    ({"name": "x", "search": {"final_sparsity": [0.5, 0.9, 0.95]}}, "search.final_sparsity: expected a finite number or a [low, high] range"),
    ({"name": "x", "search": {"begin_step": [0.0, 0.3], "end_step": [0.2, 0.9]}}, "search.end_step: must be greater than begin_step (0.3), got 0.2"),
    ({"name": "x", "search": {"end_step": 1.5}}, "search.end_step: a fraction of training must be in [0, 1]"),
    ({"name": "x", "search": {"initial_sparsity": [0.0, 0.7], "final_sparsity": [0.5, 0.95]}}, "search.initial_sparsity: must not exceed final_sparsity (0.5), got 0.7"),
    ({"name": "x", "search": {"frequency": [0, 10]}}, "search.frequency: must be at least 1 step"),
    ({"name": "x", "search": {"frequency": [1.5, 3]}}, "search.frequency: expected an integer or a [low, high] range"),
    ({"name": "x", "search": {"breakpoints": 1}}, "search.breakpoints: must be at least 2 sparsity levels"),
    ({"name": "x", "search": {"weight_decay": [0, 0.1]}}, "search.weight_decay: a range is searched on a log scale"),
    ({"name": "x", "search": {"power": 0}}, "search.power: must be greater than 0"),
    ({"name": "x", "search": {"schedule": "linear"}}, "search.schedule: unknown schedule 'linear'"),
    ({"name": "x", "search": {"schedule": []}}, "search.schedule: expected a schedule name or a list of them"),
    ({"name": "x", "objectives": ["accuracy", "accuracy"]}, "objectives: lists an objective twice"),
    ({"name": "x", "objectives": ["speed"]}, "objectives.0: Input should be 'accuracy', 'compressed_size', 'sparsity', 'int8_accuracy', 'int8_size', 'int8_file_size', 'latency' or 'int8_latency', got 'speed'"),
    ({"name": "x", "objectives": []}, "objectives: List should have at least 1 item"),
    ({"name": "x", "sampler": "cmaes"}, "sampler: Input should be 'tpe', 'nsga2', 'gp' or 'random', got 'cmaes'"),
    ({"name": "x", "constraints": {"min_accuracy": 1.5}}, "constraints.min_accuracy: Input should be less than or equal to 1"),
    ({"name": "x", "constraints": {"max_accuracy_drop": -0.1}}, "constraints.max_accuracy_drop: Input should be greater than or equal to 0"),
    ({"name": "x", "data": {"dataset": "npz"}}, "data.path: dataset 'npz' needs a path to a .npz file"),
    ({"name": "x", "data": {"dataset": "npz", "path": "missing.npz"}}, "data.path: no such file:"),
    ({"name": "x", "data": {"validation_split": 1.0}}, "data.validation_split: Input should be less than 1"),
    ({"name": "x", "model": {"builder": "resnet"}}, "model.builder: expected mlp, cnn, 'pkg.module:function'"),
    ({"name": "x", "model": {"builder": "missing.py:build"}}, "model.builder: no such file:"),
    ({"name": "x", "model": {"builder": "no_such_pkg.nets:build"}}, "model.builder: cannot find module 'no_such_pkg.nets'"),
    ({"name": "bad name"}, "name: String should match pattern"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_STUDIES)
def test_bad_study_is_rejected_with_the_key_named(raw: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_study_config(raw, base_dir=tmp_path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_builder_file_must_define_the_function(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text("def other():\n    pass\n")
    with pytest.raises(ConfigError, match="defines no top-level function 'build'"):
        parse_study_config({"name": "x", "model": {"builder": "net.py:build"}}, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nsearch: [1, 2\n", "not valid YAML (line 3, column 1)"),
        ("- just\n- a list\n", "expected a mapping of keys"),
        ("", "expected a mapping of keys"),
    ],
)
def test_unreadable_study_files(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_study_config(path)


def test_missing_study_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such study file"):
        load_study_config(tmp_path / "nope.yaml")


def test_every_example_study_in_the_repo_is_valid() -> None:
    studies = sorted((Path(__file__).parents[1] / "studies").glob("*.yaml"))
    assert len(studies) >= 5
    for path in studies:
        load_study_config(path)


def test_step_level_and_position_keys_narrow_or_fix_the_step_schedule() -> None:
    config = parse_study_config(
        {"name": "x", "search": {"schedule": "step", "step_level_1": 0.3, "step_position_1": [0.2, 0.4]}}
    )
    assert config.search.step_params == {"step_level_1": Span(0.3, 0.3), "step_position_1": Span(0.2, 0.4)}
    assert "  step_level_1: 0.3\n" in config.to_yaml()
    with pytest.raises(ConfigError, match=r"search.step_level_2: must be in \[0, 1\], got 1.5"):
        parse_study_config({"name": "x", "search": {"step_level_2": 1.5}})
    with pytest.raises(ConfigError, match="search.step_levle_1: unknown key; .*step_level_<i>"):
        parse_study_config({"name": "x", "search": {"step_levle_1": 0.3}})


# --- defaults adapt to what the user wrote; only written values are refused ----------


@pytest.mark.parametrize(
    ("written", "fitted"),
    [
        ({"final_sparsity": [0.3, 0.95]}, {"initial_sparsity": Span(0.0, 0.3)}),
        ({"final_sparsity": 0.2}, {"initial_sparsity": Span(0.0, 0.2)}),
        ({"initial_sparsity": [0.2, 0.7]}, {"final_sparsity": Span(0.7, 0.95)}),
        ({"begin_step": [0.2, 0.6]}, {"end_step": Span(0.8, 1.0)}),
        ({"begin_step": 0.4}, {"end_step": Span(0.5, 1.0)}),
        ({"end_step": [0.2, 0.4]}, {"begin_step": Span(0.0, 0.1)}),
    ],
)
def test_a_default_fits_the_value_the_user_wrote(written: dict, fitted: dict) -> None:
    search = parse_study_config({"name": "x", "search": written}).search
    for key, span in fitted.items():
        assert getattr(search, key) == span


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(["final_sparsity", "initial_sparsity", "begin_step", "end_step"]),
    low=st.floats(0.0, 0.99), width=st.floats(0.0, 0.99),
)
def test_no_default_refuses_a_valid_value(key: str, low: float, width: float) -> None:
    """Any value valid on its own (a fixed value or a range) is accepted with every other
    key left to its default."""
    high = min(low + width, 0.99)
    if key == "end_step":
        low, high = max(low, 0.01), max(high, 0.01)
    value = low if high == low else [low, high]
    parse_study_config({"name": "x", "search": {key: value}})


def test_values_the_user_wrote_are_still_refused() -> None:
    with pytest.raises(ConfigError, match=r"search.initial_sparsity: must not exceed final_sparsity \(0.3\), got 0.5"):
        parse_study_config({"name": "x", "search": {"final_sparsity": [0.3, 0.9], "initial_sparsity": [0, 0.5]}})


@pytest.mark.parametrize(
    ("study", "message"),
    [
        ({"search": {"final_sparsity": float("nan")}}, "search.final_sparsity: expected a finite number or a [low, high] range, got nan"),
        ({"search": {"power": [1.0, float("inf")]}}, "search.power: expected a finite number or a [low, high] range, got [1.0, inf]"),
        ({"train": {"learning_rate": float("inf")}}, "train.learning_rate: Input should be a finite number, got inf"),
        ({"data": {"validation_split": float("nan")}}, "data.validation_split: Input should be a finite number, got nan"),
        ({"seed": 2**32}, "seed: Input should be less than or equal to 4294967295, got 4294967296"),
    ],
)
def test_non_finite_numbers_and_oversized_seeds_are_refused(study: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_study_config({"name": "x", **study})
    assert str(raised.value) == f"study: {message}"


def test_a_study_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 9: b'\\xe9'\); save the study file as UTF-8"):
        load_study_config(path)


def test_an_alias_bomb_is_echoed_in_a_few_characters(tmp_path: Path) -> None:
    """428 bytes of nested YAML aliases stand for 9**9 strings; the error must not print them."""
    lines = ["name: x", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(["name: x", "anchors:", *("  " + line for line in lines[1:]),
                               "search: {final_sparsity: *i}", "data: *i"]) + "\n")
    with pytest.raises(ConfigError) as raised:
        load_study_config(path)
    assert len(str(raised.value)) < 400 and "\n" not in str(raised.value)


def test_a_study_stored_before_model_start_existed_keeps_training_from_scratch() -> None:
    from sweep.config import inherit_stored_values, parse_stored_config

    stored = parse_study_config({"name": "old"}).model_dump(mode="json")
    del stored["model"]["start"]  # as an older sweep stored it
    assert parse_stored_config(stored, source="stored").model.start == "scratch"
    unchanged_file = parse_study_config({"name": "old"})
    assert inherit_stored_values(unchanged_file, stored).model.start == "scratch"
    chosen = parse_study_config({"name": "old", "model": {"start": "baseline"}})
    assert inherit_stored_values(chosen, stored).model.start == "baseline"  # then refused as a change
    assert inherit_stored_values(unchanged_file, None).model.start == "baseline"  # a new study


def test_a_study_stored_before_export_existed_keeps_its_int8_file_and_objective() -> None:
    from sweep.config import inherit_stored_values, parse_stored_config
    from sweep.study.resume import check_compatible

    raw = {"name": "old", "objectives": ["int8_accuracy", "int8_size"]}
    stored = parse_study_config(raw).model_dump(mode="json")
    del stored["export"]  # as an older sweep stored it: int8_size minimised the smaller file's bytes
    read = parse_stored_config(stored, source="stored")
    assert (read.export.int8_storage, read.objectives) == ("smallest", ["int8_accuracy", "int8_file_size"])
    assert read.objective_metrics == ["int8_val_accuracy", "int8_bytes"]
    resumed = inherit_stored_values(parse_study_config(raw), stored)
    assert resumed.model_dump() == read.model_dump()
    check_compatible(stored, resumed)
    changed = inherit_stored_values(parse_study_config({**raw, "export": {"int8_storage": "dense"}}), stored)
    with pytest.raises(UsageError, match=r"different export \(int8_storage: stored 'smallest', study file 'dense'\)"):
        check_compatible(stored, changed)
    new = parse_study_config(raw)  # a new study: the dense file, its gzip minimised
    assert (new.export.int8_storage, new.objective_metrics) == ("dense", ["int8_val_accuracy", "int8_gzip_bytes"])
    assert inherit_stored_values(new, None) is new


def test_a_study_stored_before_tflite_converter_existed_keeps_converting_through_a_savedmodel() -> None:
    """Its reruns then give the very files its trials measured."""
    from sweep.config import inherit_stored_values, parse_stored_config
    from sweep.study.resume import check_compatible

    stored = parse_study_config({"name": "old"}).model_dump(mode="json")
    del stored["export"]["tflite_converter"]  # as an older sweep stored it
    assert parse_stored_config(stored, source="stored").export.tflite_converter == "savedmodel"
    resumed = inherit_stored_values(parse_study_config({"name": "old"}), stored)
    assert resumed.export.tflite_converter == "savedmodel"
    check_compatible(stored, resumed)
    assert parse_study_config({"name": "new"}).export.tflite_converter == "freeze"


def test_int8_file_size_of_a_dense_int8_file_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_study_config({"name": "x", "objectives": ["accuracy", "int8_file_size"]})
    assert str(raised.value) == (
        "study: objectives: int8_file_size is the same for every trial with export.int8_storage: dense (a dense "
        "file's size does not shrink with pruning); minimise int8_size (its gzip), search pattern: channels "
        "(removing channels shrinks the file), or set export.int8_storage: sparse")
    sparse = parse_study_config({"name": "x", "objectives": ["accuracy", "int8_file_size"],
                                 "export": {"int8_storage": "sparse"}})
    assert sparse.objective_metrics == ["val_accuracy", "int8_bytes"]
    narrower = parse_study_config({"name": "x", "objectives": ["accuracy", "int8_file_size"],
                                   "search": {"pattern": ["unstructured", "channels"]}})
    assert narrower.search.pattern == ("unstructured", "channels")


def test_channels_is_a_pattern_and_a_policy_beside_it_alone_is_refused() -> None:
    assert parse_study_config({"name": "x", "search": {"pattern": "channels"}}).search.pattern == ("channels",)
    with pytest.raises(ConfigError, match="search.policy: chooses the layers tfmot prunes, and channel trials"):
        parse_study_config({"name": "x", "search": {"pattern": "channels", "policy": "xnnpack"}})
    with pytest.raises(ConfigError, match="use unstructured, channels"):
        parse_study_config({"name": "x", "search": {"pattern": "filters"}})


def test_a_stored_study_is_read_even_if_its_files_moved(tmp_path: Path) -> None:
    from sweep.config import parse_stored_config

    (tmp_path / "model.keras").write_bytes(b"")
    (tmp_path / "data.py").write_text("def load():\n    pass\n")
    stored = parse_study_config({"name": "moved", "model": {"pretrained": "model.keras"},
                                 "data": {"loader": "data.py:load"}}, base_dir=tmp_path).model_dump(mode="json")
    (tmp_path / "model.keras").unlink()
    (tmp_path / "data.py").unlink()
    config = parse_stored_config(stored, source="stored")
    assert config.model.pretrained == str(tmp_path / "model.keras") and config.data.loader == f"{tmp_path}/data.py:load"


def test_a_study_is_stored_with_paths_inside_its_folder_relative_to_its_study_file(tmp_path: Path) -> None:
    """Files in the project folder move with it; a file outside it (a shared dataset or
    builder) stays where it is, so its path stays absolute."""
    from sweep.config import parse_stored_config

    project, shared = tmp_path / "project", tmp_path / "shared"
    for folder in (project, shared):
        folder.mkdir()
    (project / "model.keras").write_bytes(b"")
    (project / "loader.py").write_text("def load():\n    pass\n")
    (project / "layers.py").write_text("")
    (shared / "d.npz").write_bytes(b"")
    (shared / "net.py").write_text("def build(input_shape, num_classes):\n    pass\n")
    pretrained = parse_study_config({"name": "x", "data": {"loader": "loader.py:load"},
                                     "model": {"pretrained": "model.keras", "custom_objects": "layers.py"}},
                                    base_dir=project)
    built = parse_study_config({"name": "y", "data": {"dataset": "npz", "path": "../shared/d.npz"},
                                "model": {"builder": "../shared/net.py:build"}}, base_dir=project)
    stored, stored_built = pretrained.stored(), built.stored()
    assert stored["data"]["loader"] == "loader.py:load" and stored_built["data"]["path"] == str(shared / "d.npz")
    assert (stored["model"]["pretrained"], stored["model"]["custom_objects"]) == ("model.keras", "layers.py")
    assert stored_built["model"]["builder"] == f"{shared / 'net.py'}:build"
    assert parse_study_config({"name": "z", "model": {"builder": "sweep.modeling.models:cnn"}}).stored()["model"]["builder"] \
        == "sweep.modeling.models:cnn"  # a module names no file
    assert f"loader: {project / 'loader.py'}:load" in pretrained.to_yaml()  # exports work from anywhere

    copy = tmp_path / "copy"  # read back from another folder: that folder's files, present or not
    assert parse_stored_config(stored, source="stored", folder=copy).data.loader == f"{copy / 'loader.py'}:load"
    assert parse_stored_config(stored_built, source="stored", folder=copy / "x").model.builder == f"{shared / 'net.py'}:build"
    assert parse_stored_config(stored, source="stored", folder=copy).folder == copy


def test_the_accuracy_floor_is_the_higher_of_the_two_limits() -> None:
    from sweep.config import ConstraintsConfig

    assert ConstraintsConfig().floor(0.97) is None
    assert ConstraintsConfig(max_accuracy_drop=0.02).floor(0.97) == pytest.approx(0.95)
    assert ConstraintsConfig(min_accuracy=0.96, max_accuracy_drop=0.02).floor(0.97) == 0.96
    assert ConstraintsConfig(min_accuracy=0.90, max_accuracy_drop=0.02).floor(0.97) == pytest.approx(0.95)

