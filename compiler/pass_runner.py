"""Running passes through the stage cache, keeping the record of each for the bundle's manifest.

A pass's output is cached under a hash of its name, version and options, its input's digest, the
calibration digest (for passes that use calibration) and the toolchain versions (see
:mod:`edgec.compiler.cache`); a hit skips the pass and reads its artifact and stats from the entry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgec.calibration.dataset import CalibrationSet
from edgec.compiler.cache import StageCache, cache_key
from edgec.compiler.passes.base import Pass, PassContext, make_pass, wrap_failure
from edgec.compiler.planner import PassStep
from edgec.core.errors import EdgecError
from edgec.core.types import ModelArtifact, TensorSpec


class PassRunner:
    """Runs pass steps on artifacts through the stage cache.

    Args:
        cache: the stage cache.
        toolchain: package versions, part of every cache key.
        log: progress messages.
    """

    def __init__(self, cache: StageCache, toolchain: dict[str, str], log: Callable[[str], None]) -> None:
        self.cache, self.toolchain, self.log = cache, toolchain, log

    def run(self, steps: list[PassStep], artifact: ModelArtifact, calibration: CalibrationSet | None,
            records: list[dict[str, Any]]) -> ModelArtifact:
        """Run ``steps`` in order from ``artifact``, appending each pass's manifest record to ``records``.

        Returns:
            The last pass's artifact (``artifact`` itself when ``steps`` is empty).

        Raises:
            EdgecError: a pass failed (other exceptions are wrapped naming the passes that ran before).
        """
        for pass_name, options in steps:
            step = make_pass(pass_name, options)
            calib_digest = calibration.digest if (calibration is not None and step.uses_calibration) else None
            key = cache_key("pass", step.name, step.version, step.options_json(), artifact.digest, calib_digest, self.toolchain)
            entry, meta, hit = self.cache.get_or_create(key, self._producer(step, artifact, calibration, records), kind="pass")
            if hit:
                self.log(f"pass {step.name}: cached")
            artifact = ModelArtifact(entry / meta["file"], meta["format"], tuple(TensorSpec.from_json(s) for s in meta["inputs"]),
                                     tuple(TensorSpec.from_json(s) for s in meta["outputs"]), meta["digest"])
            records.append({"name": step.name, "options": step.options_json(), "modified": meta["modified"], "stats": meta["stats"]})
        return artifact

    def _producer(self, step: Pass, current: ModelArtifact, calibration: CalibrationSet | None,
                  records: list[dict[str, Any]]) -> Callable[[Path], dict[str, Any]]:
        def produce(work: Path) -> dict[str, Any]:
            self.log(f"running pass {step.name}")
            try:
                result = step.run(current, PassContext(work, calibration, self.log))
            except EdgecError:
                raise
            except Exception as exc:  # wrap_failure: a toolchain's failure is an ExportError, a bug an InternalError
                raise wrap_failure(exc, step, [r["name"] for r in records]) from exc
            art = result.artifact
            return {"file": art.path.name, "format": art.format, "digest": art.digest,
                    "inputs": [s.to_json() for s in art.inputs], "outputs": [s.to_json() for s in art.outputs],
                    "modified": result.modified, "stats": result.stats}

        return produce
