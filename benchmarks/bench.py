"""Host side of ``edgec bench``: one subprocess per bundle running the installed shim on it, then the report.

Each bundle is measured in a fresh process (``python -m edgec.runtime_shims bench BUNDLE``), so one
runtime's threads, allocator and imports never colour another's numbers and peak memory is that bundle's
alone. The process runs edgec's *installed* shim, the same code a bundle ships as ``edgec_shim/``, never
the bundle's copy: a bundle is untrusted input, and its ``edgec_shim/`` is for devices that choose to run
it. The child starts in an empty private folder with ``PYTHONSAFEPATH`` set, so no file of the bundle
(or of the working directory) is ever on its import path.

``--require-speedup`` compares every quantized bundle with its fp32 sibling measured on the same device:
the sibling among the results, else the bundle ``NAME-TARGET-fp32`` beside it on disk, which is then
benchmarked too. :func:`check_speedup` is the same check for ``edgec build --require-speedup``, and
:func:`speedup_gate` makes the callback the build runs on the staged bundle before publishing it.

A bundle whose runtime cannot execute on this host (Core ML off macOS, a runtime that is not installed:
the shim exits 3 while loading the model) is not an error of the whole run: :func:`bench_or_skip` turns it
into a *not run* entry that says why, and the other bundles are still measured. Only when nothing at all
was measured does ``edgec bench`` fail (:func:`require_some_result`, exit 3).

The host adds what it knows from the bundle on disk to each result it measured: ``model_bytes`` as the
manifest counts it (every model file, e.g. openvino's ``.xml`` and ``.bin``). Per class-score output, the
shim reports the golden top-1 agreement as counts (``top1_agree`` of ``top1_rows``) with ``near_ties``:
golden rows whose FP32 top-two margin is within twice the measured ``max_abs`` error, the only rows where
the bundle's top class can differ from FP32's (:func:`edgec.runtime_shims.measure.top1_counts`); for a
bundle whose older shim gives only the fraction, the host computes them from the bundle's golden file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgec.core.errors import EXIT_MISSING_DEPENDENCY, AccuracyGateError, ConfigError, EdgecError
from edgec.runtime_shims.measure import near_tie_count, read_golden_arrays

INSTALLED_SHIM = "edgec.runtime_shims"
"""What ``edgec bench`` runs on each bundle: this edgec's own shim, never the bundle's ``edgec_shim/`` copy."""
FP32 = "fp32"
DEFAULT_TIMEOUT_S = 600
SHIM_LOAD_ERROR = "edgec_shim: error: "
"""How the shim's last stderr line starts when loading the model failed (its exit code is then 3)."""


class ShimFailed(EdgecError):
    """The shim subprocess failed; carries the shim's exit code (same numbering as ``edgec``)."""

    family = "bench error"

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NotRunHere(ShimFailed):
    """The bundle's runtime cannot execute on this host: the shim exited 3 while loading the model."""

    family = "missing dependency"

    def __init__(self, bundle: Path, reason: str) -> None:
        super().__init__(f"{bundle}: {reason}", EXIT_MISSING_DEPENDENCY)
        self.reason = reason


class NothingRan(EdgecError):
    """No bundle could be measured: every one was *not run* here (exit code 3)."""

    exit_code = EXIT_MISSING_DEPENDENCY
    family = "missing dependency"


class SpeedupGateError(AccuracyGateError):
    """A quantized bundle is not faster than its fp32 sibling (a gate: exit code 7)."""

    family = "speedup gate"


@dataclass(frozen=True)
class BenchOptions:
    """What each shim run measures; mirrors the shim's ``bench`` flags."""

    runs: int = 100
    warmup: int = 10
    repeats: int = 3
    threads: int | None = None
    batch: int | None = None
    eval_data: Path | None = None
    device: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def flags(self) -> list[str]:
        """Command-line flags for ``edgec_shim bench``."""
        flags = ["--runs", str(self.runs), "--warmup", str(self.warmup), "--repeats", str(self.repeats)]
        for flag, value in (("--threads", self.threads), ("--batch", self.batch), ("--device", self.device)):
            if value is not None:
                flags += [flag, str(value)]
        if self.eval_data is not None:
            flags += ["--eval", str(self.eval_data.resolve())]
        return flags


@dataclass(frozen=True)
class SpeedupCheck:
    """One quantized bundle against its fp32 sibling on one device (p50 latencies in ms)."""

    device: str
    quantized: str
    fp32: str
    quantized_p50_ms: float
    fp32_p50_ms: float
    required: float

    @property
    def speedup(self) -> float:
        """fp32 p50 / quantized p50; above 1 the quantized bundle is faster."""
        return self.fp32_p50_ms / self.quantized_p50_ms if self.quantized_p50_ms > 0 else float("inf")

    @property
    def ok(self) -> bool:
        """Faster than fp32 by more than the required factor."""
        return self.speedup > self.required

    def describe(self) -> str:
        """One sentence naming both numbers."""
        verdict = "faster" if self.ok else "not faster"
        return (f"{self.quantized} is {verdict} than its fp32 sibling {self.fp32} on {self.device}: p50 "
                f"{self.quantized_p50_ms:.4g} ms vs {self.fp32_p50_ms:.4g} ms fp32 (speedup {self.speedup:.2f}x, "
                f"required > {self.required:.2f}x)")

    def to_json(self) -> dict[str, Any]:
        """For the report's ``speedup`` list."""
        return {"device": self.device, "quantized": self.quantized, "fp32": self.fp32,
                "quantized_p50_ms": self.quantized_p50_ms, "fp32_p50_ms": self.fp32_p50_ms,
                "speedup": round(self.speedup, 4), "required": self.required, "ok": self.ok}


def shim_command() -> tuple[list[str], dict[str, str]]:
    """Command and environment that run the installed shim (``edgec.runtime_shims``) on a bundle's files.

    Never the bundle's own ``edgec_shim/``: that would run code from an untrusted bundle on this host.
    ``PYTHONSAFEPATH`` (Python 3.11+) keeps the child's working directory off its import path; on older
    Pythons :func:`bench_bundle` starts the child in an empty private folder for the same reason.
    """
    return [sys.executable, "-m", INSTALLED_SHIM], {**os.environ, "PYTHONSAFEPATH": "1"}


def check_bundle_path(bundle: Path) -> Path:
    """The bundle directory, or a one-line :class:`ConfigError`."""
    if not bundle.is_dir() or not (bundle / "manifest.json").is_file():
        raise ConfigError(f"bundle not found: {bundle} (expected a bundle directory holding manifest.json)")
    return bundle


def bench_bundle(bundle: Path, options: BenchOptions) -> dict[str, Any]:
    """Benchmark one bundle in its own process; returns the shim's JSON result.

    Raises:
        ConfigError: not a bundle.
        NotRunHere: the bundle's runtime cannot execute on this host.
        ShimFailed: the shim exited non-zero or printed no JSON (its last stderr line is quoted).
        IntegrityError: the manifest is not a valid edgec manifest.
    """
    check_bundle_path(bundle)
    command, env = shim_command()
    try:
        with tempfile.TemporaryDirectory(prefix="edgec-bench-") as empty:  # the child's cwd: nothing to import
            proc = subprocess.run([*command, "bench", str(bundle.resolve()), *options.flags()], capture_output=True,
                                  text=True, env=env, cwd=empty, timeout=options.timeout_s)
    except subprocess.TimeoutExpired:
        raise ShimFailed(f"benchmarking {bundle} took longer than {options.timeout_s:g}s", 1) from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        if proc.returncode == EXIT_MISSING_DEPENDENCY and last.startswith(SHIM_LOAD_ERROR):
            raise NotRunHere(bundle, last.removeprefix(SHIM_LOAD_ERROR))
        raise ShimFailed(f"{bundle}: {last.removeprefix('edgec_shim: ')}", proc.returncode or 1)
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise ShimFailed(f"{bundle}: the shim printed no JSON result", 1) from None
    return add_host_facts(result, bundle)


def bench_or_skip(bundle: Path, options: BenchOptions) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(result, None)``, or ``(None, not_run_entry)`` when the bundle cannot run on this host.

    Raises:
        ConfigError, ShimFailed, IntegrityError: as :func:`bench_bundle`, for bundles that could run.
    """
    try:
        return bench_bundle(bundle, options), None
    except NotRunHere as exc:
        return None, not_run_entry(bundle, exc.reason, options.device)


def not_run_entry(bundle: Path, reason: str, label: str | None = None) -> dict[str, Any]:
    """A report's ``not_run`` entry: the bundle (sizes from its manifest), this host, and why.

    Raises:
        IntegrityError: the manifest is not a valid edgec manifest.
    """
    device = {"label": label or platform.node() or "unknown", "system": platform.system(),
              "release": platform.release(), "machine": platform.machine(), "python": platform.python_version()}
    return {"bundle": bundle_facts(bundle), "device": device, "reason": " ".join(reason.split()),
            "exit_code": EXIT_MISSING_DEPENDENCY}


def bundle_facts(bundle: Path) -> dict[str, Any]:
    """Name, target, precision, path and sizes of a bundle on disk, as a result's ``bundle`` holds them.

    Raises:
        IntegrityError: the manifest is not a valid edgec manifest.
    """
    from edgec.core.bundle import MANIFEST, load_manifest

    manifest = load_manifest(bundle)
    return {"name": manifest.name, "target": manifest.target, "precision": manifest.precision,
            "path": str(bundle.resolve()), "model_file": manifest.model_file, "model_bytes": manifest.model_bytes(),
            "bundle_bytes": sum(f.size for f in manifest.files),
            "manifest_sha256": hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()}


def add_host_facts(result: dict[str, Any], bundle: Path) -> dict[str, Any]:
    """The shim's result with the model size as the manifest counts it and golden top-1 agreement as counts.

    A bundle carries the shim it was built with, and older shims counted only the file named
    ``model_file`` (openvino's ``.xml`` without its ``.bin``); the manifest's count is the one tables use.

    Raises:
        IntegrityError: the manifest is not a valid edgec manifest.
    """
    from edgec.core.bundle import load_manifest

    manifest = load_manifest(bundle)
    result["bundle"]["model_bytes"] = manifest.model_bytes()
    outputs = (result.get("parity") or {}).get("outputs") or {}
    scored = {name: m for name, m in outputs.items() if "top1_agreement" in m and "near_ties" not in m}
    golden = _golden_outputs(bundle, manifest.golden) if scored else {}
    for name, metrics in scored.items():
        if name in golden and golden[name].ndim >= 2:
            metrics.update(agreement_counts(golden[name], float(metrics["top1_agreement"]), float(metrics["max_abs"])))
    return result


def agreement_counts(reference: np.ndarray, agreement: float, max_abs: float) -> dict[str, int]:
    """Counts for a result from a shim older than :func:`measure.top1_counts` (which gives them itself):
    ``top1_agree`` of ``top1_rows`` golden rows from the agreement fraction, and ``near_ties`` by the
    shim's formula (:func:`measure.near_tie_count`)."""
    rows = reference.reshape(-1, reference.shape[-1])
    return {"top1_rows": len(rows), "top1_agree": round(agreement * len(rows)),
            "near_ties": near_tie_count(rows, max_abs)}


def _golden_outputs(bundle: Path, name: str) -> dict[str, np.ndarray]:
    """``outputs/NAME`` arrays of the bundle's golden file; empty when it is not a plain file inside the bundle."""
    path = bundle / name
    root = bundle.resolve()
    if path.is_symlink() or not path.resolve().is_relative_to(root) or not path.is_file():
        return {}
    try:
        arrays = read_golden_arrays(path)  # bounded: a bomb or a lying header is refused before allocating
        return {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("outputs/")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return {}


def require_some_result(results: list[dict[str, Any]], not_run: list[dict[str, Any]]) -> None:
    """Raise :class:`NothingRan` when bundles were given but none could be measured.

    Raises:
        NothingRan: no results and at least one *not run* entry, naming each bundle and why (exit 3).
    """
    if results or not not_run:
        return
    reasons: dict[str, list[str]] = {}
    for entry in sorted(not_run, key=lambda e: _label(e)):
        reasons.setdefault(str(entry["reason"]), []).append(_label(entry))
    why = "; ".join(f"{', '.join(labels)}: {reason}" for reason, labels in reasons.items())
    count = len(not_run)
    raise NothingRan(f"none of the {count} bundle{'s' * (count != 1)} could run on this host ({why})",
                     hint="benchmark them where their runtime runs (python -m edgec_shim bench) and add the "
                          "results with --merge")


def bench_all(bundles: Iterable[Path], options: BenchOptions,
              on_start: Callable[[Path], None] = lambda b: None) -> list[dict[str, Any]]:
    """Benchmark bundles one after another, each in its own process."""
    results = []
    for bundle in bundles:
        on_start(bundle)
        results.append(bench_bundle(bundle, options))
    return results


def result_key(result: dict[str, Any]) -> tuple[str, str, str, str]:
    """(device, target, name, precision): how results are sorted and siblings found."""
    b = result["bundle"]
    return (str(result["device"]["label"]), str(b["target"]), str(b["name"]), str(b["precision"]))


def fp32_sibling_path(result: dict[str, Any]) -> Path:
    """Where ``edgec build`` puts the fp32 bundle of the same model and target: beside this one."""
    b = result["bundle"]
    return Path(b["path"]).parent / f"{b['name']}-{b['target']}-{FP32}"


def speedup_checks(results: list[dict[str, Any]], required: float = 1.0, options: BenchOptions | None = None,
                   ) -> tuple[list[SpeedupCheck], list[dict[str, Any]]]:
    """Compare every quantized result with its fp32 sibling on the same device.

    Siblings missing from ``results`` are looked for on disk beside the quantized bundle and benchmarked
    with ``options`` (results measured elsewhere, e.g. merged from a device, must bring their sibling).

    Returns:
        The checks, and the sibling results benchmarked from disk (to add to the report).

    Raises:
        ConfigError: a quantized bundle has no fp32 sibling to compare with.
    """
    by_key = {result_key(r): r for r in results}
    checks, benched = [], []
    for result in sorted(results, key=result_key):
        device, target, name, precision = result_key(result)
        if precision == FP32:
            continue
        sibling = by_key.get((device, target, name, FP32))
        if sibling is None:
            sibling = _bench_sibling(result, options)
            if sibling is None:
                raise ConfigError(f"--require-speedup: {result['bundle']['path']} has no fp32 sibling to compare "
                                  f"with (expected {fp32_sibling_path(result)} or its result among the inputs)")
            by_key[result_key(sibling)] = sibling
            benched.append(sibling)
        checks.append(SpeedupCheck(device, _label(result), _label(sibling), float(result["latency_ms"]["p50"]),
                                   float(sibling["latency_ms"]["p50"]), required))
    return checks, benched


def _bench_sibling(result: dict[str, Any], options: BenchOptions | None) -> dict[str, Any] | None:
    path = fp32_sibling_path(result)
    if options is None or not (path / "manifest.json").is_file():
        return None
    if options.device is not None and options.device != result["device"]["label"]:
        return None
    sibling = bench_bundle(path, replace(options, device=result["device"]["label"]))
    return sibling if result_key(sibling)[:3] == result_key(result)[:3] else None


def enforce_speedup(checks: list[SpeedupCheck]) -> None:
    """Raise :class:`SpeedupGateError` naming every quantized bundle that is not fast enough."""
    failures = [c.describe() for c in checks if not c.ok]
    if failures:
        raise SpeedupGateError("; ".join(failures))


def check_speedup(quantized: Path, fp32: Path, required: float = 1.0, options: BenchOptions | None = None,
                  ) -> SpeedupCheck:
    """``edgec build --require-speedup``: benchmark both bundles here, each in its own process.

    Args:
        quantized: the freshly built (possibly still staged) quantized bundle.
        fp32: its fp32 sibling.
        required: the quantized p50 must beat fp32 by more than this factor (1.0: simply faster).
        options: shim options; the default measures batch 1 with 100 runs.

    Raises:
        SpeedupGateError: the quantized bundle is not faster, naming both p50 latencies.
        ShimFailed: a bundle could not be benchmarked.
    """
    options = options or BenchOptions()
    q_result = bench_bundle(quantized, options)
    f_result = bench_bundle(fp32, options)
    check = SpeedupCheck(str(q_result["device"]["label"]), _label(q_result), _label(f_result),
                         float(q_result["latency_ms"]["p50"]), float(f_result["latency_ms"]["p50"]), required)
    enforce_speedup([check])
    return check


def speedup_gate(config: Any, required: float = 1.0, log: Callable[[str], None] = lambda m: None,
                 options: BenchOptions | None = None,
                 build_sibling: Callable[[str, Path, str], Path] | None = None) -> Callable[[Path, Any], None]:
    """The ``edgec build --require-speedup`` check, as a callback on the staged bundle and its manifest.

    The fp32 sibling is ``OUT/NAME-TARGET-fp32`` when it exists and was built from the same source;
    otherwise ``build_sibling`` builds it (stage cache hits make that cheap) into a temporary folder,
    removed afterwards. Raising from the callback makes the build fail without publishing the quantized
    bundle. The build hands this module what it needs (``build_sibling``): benchmarks never import the
    build pipeline.

    Args:
        config: the build's ``BuildConfig``.
        required: the factor the quantized p50 must beat fp32 by (1.0: simply faster).
        log: progress messages.
        options: shim options; default batch 1, 100 runs.
        build_sibling: ``(precision, out, name) -> bundle dir`` (``edgec.compiler.pipeline.sibling_builder``);
            without it a missing fp32 sibling is a configuration error.

    Raises:
        ConfigError: (immediately) the build is fp32, so there is nothing to compare.
    """
    if config.precision == FP32:
        raise ConfigError("--require-speedup compares a quantized bundle with its fp32 sibling; "
                          "use it with --precision int8 or fp16")
    if required <= 0:
        raise ConfigError(f"--require-speedup {required}: expected a factor above 0")

    def gate(staging: Path, manifest: Any) -> None:
        sibling = Path(config.out) / f"{manifest.name}-{manifest.target}-{FP32}"
        with tempfile.TemporaryDirectory(prefix="edgec-fp32-sibling-") as tmp:
            if not _same_source(sibling, manifest.source.get("sha256")):
                if build_sibling is None:
                    raise ConfigError(f"--require-speedup: no fp32 sibling {sibling} built from the same source; "
                                      "build it first")
                log("building the fp32 sibling for --require-speedup")
                sibling = build_sibling(FP32, Path(tmp), manifest.name)
            log(f"benchmarking {manifest.name} {manifest.precision} against {sibling.name}")
            log(check_speedup(staging, sibling, required, options).describe())

    return gate


def _same_source(bundle: Path, source_sha256: str | None) -> bool:
    try:
        recorded = json.loads((bundle / "manifest.json").read_text())["source"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(source_sha256) and recorded == source_sha256


def parity_failures(results: list[dict[str, Any]]) -> list[str]:
    """``"BUNDLE on DEVICE: failure"`` for results whose golden outputs were outside tolerance."""
    found = []
    for r in sorted(results, key=result_key):
        parity = r.get("parity") or {}
        if parity.get("measured") and parity.get("ok") is False:
            found.append(f"{_label(r)} on {r['device']['label']}: {'; '.join(parity.get('failures', []))}")
    return found


def _label(result: dict[str, Any]) -> str:
    b = result["bundle"]
    return f"{b['name']}-{b['target']}-{b['precision']}"
