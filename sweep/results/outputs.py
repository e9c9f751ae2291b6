"""The folders commands write their files to (`--output` of `sweep report` and `sweep rerun`).

One rule for both: sweep writes into a new or empty folder, or into one that only holds
what the same command wrote there before (listed in the folder's manifest,
`.sweep-output.json`). So it never overwrites a user's file, nor mixes its files with
theirs; `sweep report` can refresh its own report, and a rerun's export (moved into place
whole) always needs a new or empty folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from sweep.errors import UsageError

MANIFEST = ".sweep-output.json"  # {"command": "report", "files": [names]}: what sweep wrote here


def check_output_folder(output: Path, command: str) -> None:
    """A `UsageError` naming the fix unless `command` may write into `output` (see above)."""
    if output.is_symlink():
        raise UsageError(f"--output: {output} is a symlink; give a new folder (the export is moved there, not through links)")
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output: {output} is a file; give a new or empty folder")
    if not output.parent.exists():
        raise UsageError(f"--output: the parent folder {output.parent} does not exist")
    own = written_by(output, command)
    foreign = [name for name in sorted(_entries(output)) if name not in own]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UsageError(f"--output: {output} holds files `sweep {command}` may not overwrite ({shown}); give a new "
                         f"or empty folder")


def check_report_folder(output: Path, artifact_store: Path | None) -> None:
    """`check_output_folder` for `sweep report`, whose folder also must not be, or hold, the
    study's MLflow artifact store on this machine (`Tracker.local_artifact_store`)."""
    if artifact_store is not None and (artifact_store == output.resolve() or output.resolve() in artifact_store.parents):
        raise UsageError(f"--output: {output} holds the study's MLflow artifact store {artifact_store}; "
                         f"give a folder outside it, e.g. --output report/")
    check_output_folder(output, "report")  # never overwrites what sweep did not write


def written_by(output: Path, command: str) -> set[str]:
    """The names in `output` that `command` wrote (its manifest included); none without one."""
    try:
        manifest = json.loads((output / MANIFEST).read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(manifest, dict) or manifest.get("command") != command:
        return set()
    return {MANIFEST, *(name for name in manifest.get("files", []) if isinstance(name, str))}


def record_output(output: Path, command: str, files: Iterable[Path]) -> None:
    """List `files` (and what the command wrote there before and is still there) in the
    folder's manifest; written aside and renamed, so it is whole or absent."""
    before = (written_by(output, command) & _entries(output)) - {MANIFEST}
    names = before | {path.name for path in files}
    aside = output / f"{MANIFEST}.new"
    aside.write_text(json.dumps({"command": command, "files": sorted(names)}, indent=1) + "\n")
    os.replace(aside, output / MANIFEST)


def _entries(output: Path) -> set[str]:
    return {item.name for item in output.iterdir()} if output.is_dir() else set()
