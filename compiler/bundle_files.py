"""Files a build puts into a bundle beside the target's model: the runtime shims, a fidelity candidate's
model files; and the model's cost for the manifest."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from edgec.compiler.search_probe import Candidate
from edgec.targets.base import ExportResult

SHIM_DIR = "edgec_shim"


def ship_shims(bundle: Path) -> list[str]:
    """Copy the runtime shims into ``bundle/edgec_shim/`` so the bundle runs with numpy + its runtime only.

    Every folder of the ``edgec.runtime_shims`` package is copied (a shim module added to its ``__path__``
    ships like the built-in ones); where two folders hold one file name, the first wins, as in imports.

    Returns:
        The copied files, relative to the bundle, sorted.
    """
    import edgec.runtime_shims as shims

    dest = bundle / SHIM_DIR
    dest.mkdir()
    copied = []
    for folder in shims.__path__:
        for path in sorted(Path(folder).glob("*.py")):
            if not (dest / path.name).exists():
                shutil.copyfile(path, dest / path.name)
                copied.append(f"{SHIM_DIR}/{path.name}")
    return sorted(copied)


def copy_candidate(candidate: Candidate, staging: Path) -> ExportResult:
    """Copy the model files of a candidate built while measuring (``--max-drop``, ``--report-layers``)
    into ``staging``: the bundle ships exactly the model that was measured."""
    for name in candidate.result.files:
        source = candidate.model.parent / name
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, staging / name)
        else:
            shutil.copyfile(source, staging / name)
    return candidate.result


def model_cost(model: Path, sample: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Params, MACs per sample and weight sparsity of an ONNX model file (None for other formats), its
    dynamic dims sized as in ``sample`` (a golden input) where given."""
    if model.suffix != ".onnx":
        return None
    from edgec.compiler import flops

    shapes = {name: tuple(int(d) for d in getattr(value, "shape", ())) for name, value in (sample or {}).items()}
    return flops.file_cost(model, shapes=shapes).to_json()
