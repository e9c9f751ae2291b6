"""What a study's trials were measured on besides its study file: the data's values and a
pretrained model's bytes. A study is resumed, rerun or joined by a worker only on the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweep.config import StudyConfig
from sweep.data import Dataset
from sweep.errors import UsageError

DATA_FINGERPRINT = "data_fingerprint"  # study user_attrs key: `Dataset.fingerprint`
MODEL_FINGERPRINT = "model_fingerprint"  # study user_attrs key: SHA-256 of model.pretrained


def input_fingerprints(config: StudyConfig, dataset: Dataset) -> dict[str, str]:
    """What a study's trials were measured on, beyond its study file: the data's values
    and, for a pretrained model, the file's bytes."""
    fingerprints = {DATA_FINGERPRINT: dataset.fingerprint}
    if config.model.pretrained is not None:
        fingerprints[MODEL_FINGERPRINT] = file_fingerprint(Path(config.model.pretrained))
    return fingerprints


def file_fingerprint(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (names and bytes; a SavedModel)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        digest.update(str(file.relative_to(path)).encode() if path.is_dir() else b"")
        with open(file, "rb") as opened:
            digest.update(hashlib.file_digest(opened, "sha256").digest())
    return digest.hexdigest()


def check_same_inputs(stored: Mapping[str, Any], fingerprints: Mapping[str, str], config: StudyConfig) -> None:
    """A study resumes only on the data and the pretrained model its trials were measured on."""
    for key, fingerprint in fingerprints.items():
        before = stored.get(key)
        if before is None or before == fingerprint:
            continue
        data = config.data
        source = (f"model.pretrained {config.model.pretrained} now holds another model" if key == MODEL_FINGERPRINT
                  else f"data.path {data.path} now holds other data" if data.path
                  else f"data.loader {data.loader} now returns other data" if data.loader
                  else f"data.dataset {data.dataset} now holds other data")
        what = "model" if key == MODEL_FINGERPRINT else "data"
        raise UsageError(
            f"study {config.name!r} was run on different {what}: {source} (fingerprint {fingerprint[:12]}, "
            f"stored {before[:12]}); give the study a new name, or restore the original {what}"
        )
