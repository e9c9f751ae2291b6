"""A project folder copied or moved elsewhere: its study resumes and reruns from its own
files, and only a change of their content (the fingerprints) is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from sweep.config import StudyConfig, load_study_config
from sweep.errors import UsageError

from conftest import REPO, run_sweep, write_study

STUDY = {"name": "moved", "data": {"loader": "loader.py:load"}, "model": {"pretrained": "model.keras"}}


def project_folder(folder: Path, study: dict[str, object] = STUDY) -> StudyConfig:
    """A project folder with a loader, a model file and a builder file; its study file loaded."""
    folder.mkdir(parents=True)
    (folder / "loader.py").write_text("def load():\n    pass\n")
    (folder / "net.py").write_text("def build(input_shape, num_classes):\n    pass\n")
    (folder / "model.keras").write_bytes(b"")
    (folder / "study.yaml").write_text(yaml.safe_dump(study))
    return load_study_config(folder / "study.yaml")


def test_a_copied_project_is_the_same_study(tmp_path: Path) -> None:
    from sweep.stores import records
    from sweep.study.resume import check_compatible, study_attrs

    original, copy = project_folder(tmp_path / "a"), project_folder(tmp_path / "b")
    stored = records.stored_config(study_attrs(original))
    check_compatible(stored, copy)
    changed = project_folder(tmp_path / "c", {**STUDY, "train": {"epochs": 3}})
    with pytest.raises(UsageError, match="already exists with a different train .epochs: stored 10, study file 3"):
        check_compatible(stored, changed)


def test_the_files_a_study_reads_are_the_given_study_files(tmp_path: Path) -> None:
    from sweep.study.resume import stored_study_config, study_attrs

    attrs = study_attrs(project_folder(tmp_path / "a"))
    copy = tmp_path / "b" / "study.yaml"  # need not exist: only its folder is used
    assert stored_study_config("moved", attrs, copy).model.pretrained == str(tmp_path / "b" / "model.keras")
    assert stored_study_config("moved", attrs, None).data.loader == f"{tmp_path / 'a' / 'loader.py'}:load"
    with pytest.raises(UsageError, match="study 'moved' was not created by sweep run"):
        stored_study_config("moved", {}, copy)


def test_a_study_stored_with_absolute_paths_resumes_where_it_ran_and_its_fingerprints_decide_elsewhere(
    tmp_path: Path,
) -> None:
    from sweep.stores.records import DATA_FINGERPRINT, MODEL_FINGERPRINT
    from sweep.study.fingerprints import check_same_inputs
    from sweep.study.resume import check_compatible

    original, copy = project_folder(tmp_path / "a"), project_folder(tmp_path / "b")
    stored = original.model_dump(mode="json")  # as sweep stored a study before paths were relative
    fingerprints = {DATA_FINGERPRINT: "data", MODEL_FINGERPRINT: "model"}
    for config in (original, copy):
        check_compatible(stored, config)
        check_same_inputs({"config": stored, **fingerprints}, fingerprints, config)
    check_same_inputs({"config": stored}, fingerprints, original)  # older still: no fingerprints, same files
    with pytest.raises(UsageError, match=f"different data .loader: stored '{tmp_path / 'a' / 'loader.py'}:load', "
                                         f"study file '{tmp_path / 'b' / 'loader.py'}:load'"):
        check_same_inputs({"config": stored}, fingerprints, copy)
    with pytest.raises(UsageError, match="was run on different model: model.pretrained .* now holds another model"):
        check_same_inputs({"config": stored, **fingerprints}, {**fingerprints, MODEL_FINGERPRINT: "other"}, copy)


def test_a_builder_file_is_the_same_relative_to_the_study_file(tmp_path: Path) -> None:
    from sweep.stores import records
    from sweep.study.resume import check_compatible, study_attrs

    built = {"name": "built", "model": {"builder": "net.py:build"}}
    original, copy = project_folder(tmp_path / "a", built), project_folder(tmp_path / "b", built)
    check_compatible(records.stored_config(study_attrs(original)), copy)
    check_compatible(original.model_dump(mode="json"), original)
    with pytest.raises(UsageError, match="different model .builder: stored '.*/a/net.py:build', study file "
                                         "'.*/b/net.py:build'"):  # code has no fingerprint
        check_compatible(original.model_dump(mode="json"), copy)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder A: studies/pretrained's loader and model (saved untrained: what it holds does not
    matter here), and a study of 2 trials run there."""
    folder = tmp_path_factory.mktemp("project") / "a"
    folder.mkdir()
    for name in ("loader.py", "train_model.py"):
        shutil.copy(REPO / "studies" / "pretrained" / name, folder)
    saved = subprocess.run([sys.executable, "-c", "from train_model import HERE, build; build().save(HERE / 'model.keras')"],
                           cwd=folder, capture_output=True, text=True, timeout=300, check=False)
    assert saved.returncode == 0, saved.stderr[-3000:]
    write_study(folder, name="moved", n_trials=2, data={"loader": "loader.py:load"},
                model={"builder": None, "pretrained": "model.keras", "prune": {"exclude": "^logits$"}},
                train={"epochs": 1, "batch_size": 64}, search={"schedule": "constant"})
    result = run_sweep("run", "moved.yaml", cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def complete_trials(folder: Path) -> int:
    from sweep.stores.optuna_storage import load_study

    study = load_study("moved", f"sqlite:///{folder / 'sweep.db'}")
    return len(study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]))


@pytest.mark.slow
def test_a_copied_project_resumes_and_reruns_from_its_own_files(project: Path) -> None:
    copy = shutil.copytree(project, project.with_name("b"))
    reader = shutil.copytree(project, project.with_name("c"))  # only analysed, after the original is gone

    resumed = run_sweep("run", "moved.yaml", "--n-trials", "1", cwd=copy)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (complete_trials(copy), complete_trials(project)) == (3, 2)

    shutil.rmtree(project)  # the original is gone: the copy's loader and model are the ones used
    rerun = run_sweep("rerun", "moved.yaml", "--trial", "0", "--output", "out", cwd=copy)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((copy / "out" / "metrics.json").read_text())
    for name in ("val_accuracy", "sparsity", "compressed_bytes", "test_accuracy"):  # exactly reproduced
        assert summary["reproduced"][name] == summary["original"][name], name
    # The exported study and `sweep best --format yaml` name the copy's files, absolute: they
    # are written where the project is not (an output folder, stdout).
    best = run_sweep("best", "moved.yaml", "--format", "yaml", cwd=copy)
    assert best.returncode == 0, best.stderr[-3000:]
    for text in ((copy / "out" / "study.yaml").read_text(), best.stdout):
        written = yaml.safe_load(text)
        assert written["data"]["loader"] == f"{copy / 'loader.py'}:load"
        assert written["model"]["pretrained"] == str(copy / "model.keras")

    loader = copy / "loader.py"
    loader.write_text(loader.read_text().replace("random_state=0", "random_state=1"))  # other data, same file
    refused = run_sweep("run", "moved.yaml", "--n-trials", "1", cwd=copy)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "study 'moved' was run on different data: data.loader" in refused.stderr
    assert "now returns other data" in refused.stderr
    assert complete_trials(copy) == 3

    # The commands that log artifacts log them into the copy's own store, first of all.
    for command in (("pareto", "moved.yaml", "--plot", "front.png"), ("report", "moved.yaml", "--output", "report")):
        analysed = run_sweep(*command, cwd=reader)
        assert analysed.returncode == 0, analysed.stderr[-3000:]
    assert {path.name for path in (reader / "mlruns").rglob("*") if path.parent.name in ("plots", "report")} >= {
        "front.png", "report.html"}
    assert not project.exists()  # nothing was written to the original's folder


@pytest.mark.slow
def test_a_moved_project_starts_its_trials_from_its_own_baseline_weights(tmp_path: Path) -> None:
    """A builder model's trials start from the baseline weights, an MLflow artifact. MLflow
    keeps artifact paths absolute, so a moved `mlflow.db` pointed into the deleted folder."""
    from mlflow.tracking import MlflowClient

    original = tmp_path / "a"
    original.mkdir()
    write_study(original, name="weights", n_trials=1, train={"epochs": 1}, search={"schedule": "constant"})
    assert run_sweep("run", "weights.yaml", cwd=original).returncode == 0
    moved = tmp_path / "b"
    original.rename(moved)

    resumed = run_sweep("run", "weights.yaml", "--n-trials", "1", cwd=moved)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count(f"not in {original / 'mlruns'}") == 1  # by the run that moved them
    assert not original.exists()
    client = MlflowClient(f"sqlite:///{moved / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("weights")
    assert experiment.artifact_location == str(moved / "mlruns" / experiment.experiment_id)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3 and all(r.info.artifact_uri.startswith(str(moved / "mlruns")) for r in runs)
