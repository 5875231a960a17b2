"""What the search-reuse benchmarks share: timing named functions, and one search build with a target's
:meth:`~edgec.targets.base.Target.reuse` on or off (:mod:`edgec.benchmarks.openvino_search_reuse`,
:mod:`edgec.benchmarks.onnx_search_reuse`)."""

from __future__ import annotations

import contextlib
import functools
import importlib
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

Phases = dict[str, tuple[str, str]]
"""Phase -> (module, function or Class.method) whose calls are timed and counted."""


@contextlib.contextmanager
def timed(seconds: dict[str, float], phases: Phases) -> Iterator[None]:
    """Add the wall time and count of every call of each of ``phases``' functions to ``seconds`` while inside."""
    undo: list[tuple[Any, str, Any]] = []
    for phase, (module, name) in phases.items():
        owner: Any = importlib.import_module(module)
        *path, attr = name.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = owner.__dict__[attr]
        undo.append((owner, attr, original))
        setattr(owner, attr, _timer(original, phase, seconds))
    try:
        yield
    finally:
        for owner, attr, original in reversed(undo):
            setattr(owner, attr, original)


def _timer(function: Callable[..., Any], phase: str, seconds: dict[str, float]) -> Callable[..., Any]:
    @functools.wraps(function)  # a pass inspects quantize_static's signature
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - start
            seconds[f"{phase} calls"] = seconds.get(f"{phase} calls", 0) + 1
    return wrapper


def run_build(config: Any, reuse: bool, target: type[Any], phases: Phases) -> dict[str, Any]:
    """One build with ``target``'s sharing on or off: its phases, builds and what it chose."""
    from edgec.compiler.pipeline import build

    seconds: dict[str, float] = {}
    original = target.reuse
    if not reuse:
        target.reuse = lambda self: contextlib.nullcontext()
    start = time.perf_counter()
    try:
        with timed(seconds, phases):
            outcome = build(config)
        record = (outcome.manifest.model_extra or {})["mixed_precision"]
        result: dict[str, Any] = {"float_layers": record["float_layers"], "value": record["value"], "builds": record["builds"],
                                  "steps": record["steps"]}
    except Exception as exc:  # an unmet budget (exit 7) is a result too: the same message, the same best score
        result = {"error": str(exc).splitlines()[0][:300]}
        builds = re.search(r"after (\d+) builds", result["error"])
        result["builds"] = int(builds.group(1)) if builds else 0
    finally:
        target.reuse = original
    result["build_s"] = round(time.perf_counter() - start, 2)
    result["phases"] = {k: round(v, 2) for k, v in seconds.items()}
    return result
