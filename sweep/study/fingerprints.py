"""What a study's trials were measured on besides its study file: the data's values and a
pretrained model's bytes. A study is resumed, rerun or joined by a worker only on the same,
wherever its files are now (a copied or moved project).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.config import StudyConfig, parse_stored_config
from sweep.errors import ConfigError, UsageError
from sweep.stores import records
from sweep.stores.records import DATA_FINGERPRINT, MODEL_FINGERPRINT

if TYPE_CHECKING:
    from sweep.data.splits import Dataset

# The study file keys whose files each fingerprint covers: their content decides, not where they are.
FINGERPRINTED = {
    DATA_FINGERPRINT: (("data", "path"), ("data", "loader")),
    MODEL_FINGERPRINT: (("model", "pretrained"),),
}


def input_fingerprints(config: StudyConfig, dataset: Dataset) -> dict[str, str]:
    """What a study's trials were measured on, beyond its study file: the data's values
    (`Dataset.fingerprint`) and, for a pretrained model, the file's bytes (SHA-256), by
    the study attribute each is recorded under."""
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


def check_same_inputs(stored: records.AnyStudy, fingerprints: Mapping[str, str], config: StudyConfig) -> None:
    """A study resumes only on the data and the pretrained model its trials were measured on:
    the same content, or for a study stored before its fingerprint, the same files."""
    for key, fingerprint in fingerprints.items():
        before = records.input_fingerprint(stored, key)
        if before is None:
            _check_same_files(records.stored_config(stored), config, FINGERPRINTED[key])
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


def _check_same_files(stored: Any, config: StudyConfig, keys: tuple[tuple[str, str], ...]) -> None:
    """Without a fingerprint only the place tells: the stored path, resolved from the study
    file's folder, must be the study file's."""
    if not stored:
        return
    try:
        before = parse_stored_config(stored, source="stored study", folder=config.folder)
    except ConfigError:
        return  # unreadable now: nothing to compare with
    for section, key in keys:
        was, now = getattr(getattr(before, section), key), getattr(getattr(config, section), key)
        if was != now:
            raise UsageError(
                f"study {config.name!r} already exists with a different {section} ({key}: stored {was!r}, "
                f"study file {now!r}); give the study a new name, or restore the original {section}"
            )
