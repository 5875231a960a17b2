"""Timing loop, latency percentiles, spread between repeated rounds, peak resident memory, parity.

numpy and the standard library only: this file ships inside bundles and runs on devices.

Noise is reported, not hidden: the timed runs are split into ``repeats`` rounds and the report keeps
each round's median, the relative spread between those medians and the coefficient of variation of
all samples. A user comparing two bundles whose difference is smaller than their spread is looking at
noise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import bounded_npz

PERCENTILES = (50, 90, 99)
DEFAULT_MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98}
"""Used only when a manifest records no tolerance (targets whose parity cannot be measured at build time)."""
GOLDEN_FLOOR_MB = 256
GOLDEN_RATIO = 16
GOLDEN_ENV = "EDGEC_GOLDEN_LIMIT_MB"
"""Caps on what a bundle's golden file may decode to (:func:`golden_limit`)."""


@dataclass(frozen=True)
class Timing:
    """Latencies of the timed runs, in seconds, grouped by round."""

    rounds: tuple[tuple[float, ...], ...]
    batch: int

    @property
    def samples(self) -> np.ndarray:
        """All latencies, in seconds."""
        return np.array([t for r in self.rounds for t in r], dtype=np.float64)


def time_calls(call: Callable[[], Any], runs: int, warmup: int, repeats: int = 3) -> list[list[float]]:
    """Call ``call`` ``warmup`` times untimed, then ``runs`` times timed, split into ``repeats`` rounds.

    Returns:
        One list of latencies in seconds per round (rounds differ in length by at most one).
    """
    if runs < 1 or warmup < 0 or repeats < 1:
        raise ValueError(f"runs must be >= 1, warmup >= 0 and repeats >= 1 (got {runs}, {warmup}, {repeats})")
    for _ in range(warmup):
        call()
    repeats = min(repeats, runs)
    sizes = [runs // repeats + (1 if i < runs % repeats else 0) for i in range(repeats)]
    rounds = []
    clock = time.perf_counter
    for size in sizes:
        times = []
        for _ in range(size):
            start = clock()
            call()
            times.append(clock() - start)
        rounds.append(times)
    return rounds


def interleaved_calls(calls: dict[str, Callable[[], Any]], runs: int, warmup: int, rounds: int) -> dict[str, list[float]]:
    """Time several variants in alternating rounds, so that a slow spell of the host falls on all of them:
    ``runs`` timed calls of each, split into ``rounds`` (sizes differ by at most one), each variant warmed up
    with ``warmup`` calls at the start of every round.

    Returns:
        Latencies in seconds, by variant name.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    rounds = min(rounds, runs)
    for size in [runs // rounds + (1 if i < runs % rounds else 0) for i in range(rounds)]:
        for name, call in calls.items():
            times[name].extend(time_calls(call, size, warmup, repeats=1)[0])
    return times


def summarize(timing: Timing) -> dict[str, Any]:
    """Latency statistics (milliseconds), throughput and noise of a :class:`Timing`.

    Returns:
        ``{"latency_ms": {...}, "throughput_per_s": float, "noise": {...}}``; see the bench schema.
    """
    ms = timing.samples * 1000.0
    latency = {f"p{p}": sig6(float(np.percentile(ms, p))) for p in PERCENTILES}
    latency.update(mean=sig6(float(ms.mean())), min=sig6(float(ms.min())), max=sig6(float(ms.max())),
                   std=sig6(float(ms.std())))
    round_p50 = [float(np.median(r)) * 1000.0 for r in timing.rounds]
    median = float(np.median(round_p50))
    noise = {
        "rounds": len(timing.rounds),
        "round_p50_ms": [sig6(v) for v in round_p50],
        "spread_rel": sig6((max(round_p50) - min(round_p50)) / median) if median > 0 else 0.0,
        "cv": sig6(float(ms.std() / ms.mean())) if ms.mean() > 0 else 0.0,
    }
    total = float(timing.samples.sum())
    throughput = timing.batch * len(ms) / total if total > 0 else 0.0
    return {"latency_ms": latency, "throughput_per_s": sig6(throughput), "noise": noise}


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process so far, in bytes; None where the OS does not say.

    ``ru_maxrss`` is kilobytes on Linux and Android and bytes on macOS and iOS.
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def looks_like_class_scores(arr: np.ndarray) -> bool:
    """Outputs shaped ``(samples, batch, classes)`` of floats with 2..100000 classes, unless every row has
    unit L2 norm (normalised embeddings, where a top-1 agreement means nothing)."""
    if not (arr.ndim == 3 and arr.dtype.kind == "f" and 2 <= arr.shape[-1] <= 100_000):
        return False
    norms = np.linalg.norm(arr.astype(np.float64), axis=-1)
    return not bool(np.all(np.abs(norms - 1.0) < 1e-3))


def compare_output(ref: np.ndarray, got: np.ndarray, parts: tuple[int, list[int]] | None = None) -> dict[str, Any]:
    """max_abs, mean_abs, cosine and the reference's largest magnitude of two arrays stacked over samples;
    for class scores also the top-1 agreement, as a fraction (``top1_agreement``) and as counts
    (``top1_agree`` of ``top1_rows``, with ``near_ties``: see :func:`top1_counts`).

    The one implementation of these metrics: the compiler's parity module, ``edgec verify``, the device
    agent's health check and the shim all use it (it needs numpy only, so it ships inside bundles).
    """
    if ref.shape != got.shape:
        got = got.reshape(ref.shape) if got.size == ref.size else got
    ref64 = ref.astype(np.float64).ravel()
    got64 = got.astype(np.float64).ravel()
    if ref64.shape != got64.shape:
        return dict(_MISMATCH)
    result = _elementwise(ref64, got64)
    if looks_like_class_scores(ref):
        result["top1_agreement"] = sig6(float(np.mean(ref.argmax(-1) == got.argmax(-1))))
        result.update(top1_counts(ref, got, result["max_abs"]))
    if parts is not None:
        cosines = part_cosines(ref, got, parts[0] + 1, parts[1])
        if cosines is not None:
            result.update(part_axis=parts[0], part_sizes=list(parts[1]), part_cosines=cosines, min_part_cosine=min(cosines))
    return result


_MISMATCH = {"max_abs": float("inf"), "mean_abs": float("inf"), "cosine": 0.0, "centred_cosine": 0.0, "ref_max_abs": 0.0}


def _elementwise(ref64: np.ndarray, got64: np.ndarray) -> dict[str, Any]:
    """max_abs, mean_abs, cosine, centred cosine (see :func:`_centred_cosine`) and the reference's largest
    magnitude of two flat float64 arrays.

    The centred cosine is what the plain one hides on outputs far from zero on average: speech probabilities
    0.02-0.96 that lost their ups and downs still have cosine 0.98 with FP32 (silero-vad's INT8 on
    OpenVINO: centred cosine 0.52, decisions 0.56)."""
    diff = np.abs(ref64 - got64)
    denom = float(np.linalg.norm(ref64) * np.linalg.norm(got64))
    cosine = float(ref64 @ got64 / denom) if denom > 0 else float(np.array_equal(ref64, got64))
    return {"max_abs": sig6(float(diff.max()) if diff.size else 0.0),
            "mean_abs": sig6(float(diff.mean()) if diff.size else 0.0), "cosine": sig6(cosine),
            "centred_cosine": _centred_cosine(ref64, got64) if ref64.size else 1.0,
            "ref_max_abs": sig6(float(np.abs(ref64).max()) if ref64.size else 0.0)}


def compare_samples(refs: list[Any], gots: list[Any], parts: tuple[int, list[int]] | None = None) -> dict[str, Any]:
    """:func:`compare_output` over per-sample arrays, which may differ in shape from sample to sample (golden
    inputs at two sizes of a dynamic dim): samples of one shape are stacked as before; otherwise every
    metric is taken over all samples' elements (and class-score rows, and each part's elements) together, so
    one sample size cannot hide another's error."""
    pairs = [(np.asarray(r), np.asarray(g)) for r, g in zip(refs, gots)]
    if any(r.size != g.size for r, g in pairs) or not pairs:
        return dict(_MISMATCH)
    pairs = [(r, g.reshape(r.shape)) for r, g in pairs]
    if len({r.shape for r, _ in pairs}) == 1:
        return compare_output(np.stack([r for r, _ in pairs]), np.stack([g for _, g in pairs]), parts)
    result = _elementwise(np.concatenate([r.astype(np.float64).ravel() for r, _ in pairs]),
                          np.concatenate([g.astype(np.float64).ravel() for _, g in pairs]))
    classes = {r.shape[-1] if r.ndim else 0 for r, _ in pairs}
    if len(classes) == 1 and all(looks_like_class_scores(r[None]) for r, _ in pairs):
        rows = [np.concatenate([a.reshape(-1, a.shape[-1]) for a in side]) for side in zip(*pairs)]
        result["top1_agreement"] = sig6(float(np.mean(rows[0].argmax(-1) == rows[1].argmax(-1))))
        result.update(top1_counts(rows[0], rows[1], result["max_abs"]))
    if parts is not None:
        cosines = _ragged_part_cosines(pairs, parts[0], parts[1])
        if cosines is not None:
            result.update(part_axis=parts[0], part_sizes=list(parts[1]), part_cosines=cosines, min_part_cosine=min(cosines))
    return result


def _ragged_part_cosines(pairs: list[tuple[np.ndarray, np.ndarray]], axis: int, sizes: list[int]) -> list[float] | None:
    """:func:`part_cosines` of samples of several shapes: each part's elements of every sample together."""
    if min(sizes, default=0) < 1 or any(not 0 <= axis < r.ndim or r.shape[axis] != sum(sizes) for r, _ in pairs):
        return None
    cuts = np.cumsum(sizes)[:-1]
    split = [(np.split(r, cuts, axis), np.split(g, cuts, axis)) for r, g in pairs]
    return [_centred_cosine(np.concatenate([rs[i].ravel() for rs, _ in split]), np.concatenate([gs[i].ravel() for _, gs in split]))
            for i in range(len(sizes))]


def _centred_cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """Cosine of the deviations of ``ref`` and ``got`` from ``ref``'s mean (0.0 for values within 1e-9 of 0)."""
    r = ref.astype(np.float64).ravel()
    g = got.astype(np.float64).ravel() - r.mean()
    r = r - r.mean()
    denom = float(np.linalg.norm(r) * np.linalg.norm(g))
    value = float(r @ g) / denom if denom > 0 else float(np.allclose(r, g))
    return sig6(value) if abs(value) > 1e-9 else 0.0  # no -0.0 from rounding


def parts_in(limits: dict[str, Any] | None) -> tuple[int, list[int]] | None:
    """The split an output's tolerance records (``part_axis``, ``part_sizes``), for :func:`compare_output`."""
    if not limits or "part_sizes" not in limits:
        return None
    return int(limits["part_axis"]), [int(s) for s in limits["part_sizes"]]


def part_cosines(ref: np.ndarray, got: np.ndarray, axis: int, sizes: list[int]) -> list[float] | None:
    """For an output that joins parts along ``axis`` (of the arrays stacked over samples; a detector's boxes
    and class probabilities): each part's cosine of the deviations from that part's reference mean, so each
    part is judged on its own scale and place (probabilities that all became one value score 0, however
    well the boxes match). None when the arrays do not split into ``sizes`` along ``axis``.
    """
    if ref.shape != got.shape or not 0 < axis < ref.ndim or ref.shape[axis] != sum(sizes) or min(sizes, default=0) < 1:
        return None
    cuts = np.cumsum(sizes)[:-1]
    return [_centred_cosine(r, g) for r, g in zip(np.split(ref, cuts, axis), np.split(got, cuts, axis))]


def top1_counts(ref: np.ndarray, got: np.ndarray, max_abs: float) -> dict[str, int]:
    """Golden rows whose top class matches the reference's (``top1_agree`` of ``top1_rows``) and
    ``near_ties``: rows whose reference top-two margin is at most ``2 * max_abs``.

    Every score moves by at most ``max_abs``, so the top class can change only where the reference's two
    best scores are within ``2 * max_abs`` of each other: ``top1_rows - top1_agree <= near_ties`` always.
    A low agreement on a golden set made of near-ties is rounding, not lost accuracy.
    """
    rows = ref.reshape(-1, ref.shape[-1])
    agree = int(np.sum(rows.argmax(-1) == got.reshape(rows.shape).argmax(-1)))
    return {"top1_agree": agree, "top1_rows": len(rows), "near_ties": near_tie_count(rows, max_abs)}


def near_tie_count(reference: np.ndarray, max_abs: float) -> int:
    """Rows (over the last axis) whose two largest reference scores are within ``2 * max_abs``."""
    rows = reference.reshape(-1, reference.shape[-1]).astype(np.float64)
    top2 = np.sort(rows, axis=1)[:, -2:]
    return int(np.sum(top2[:, 1] - top2[:, 0] <= 2 * max_abs))


def format_top1(metrics: dict[str, Any], samples: int | None = None) -> str:
    """``top-1 4/8 (5 near-ties)`` from an output's metrics; ``top-1 4/8`` without near-ties (results
    that recorded only the fraction, with the sample count); empty for outputs that are not class scores."""
    if "top1_agree" in metrics and "top1_rows" in metrics:
        agree, rows = int(metrics["top1_agree"]), int(metrics["top1_rows"])
        ties = metrics.get("near_ties")
        tail = f" ({int(ties)} near-tie{'' if ties == 1 else 's'})" if ties is not None else ""
        return f"top-1 {agree}/{rows}{tail}"
    if "top1_agreement" not in metrics:
        return ""
    fraction = float(metrics["top1_agreement"])
    if samples:
        agree_f = fraction * samples
        if abs(agree_f - round(agree_f)) < 1e-3:
            return f"top-1 {round(agree_f)}/{samples}"
    return f"top-1 {fraction:.1%}"


def check_tolerance(measured: dict[str, dict[str, Any]], tolerance: dict[str, dict[str, Any]]) -> list[str]:
    """Failure descriptions (empty when every output is within its ``max_abs``, ``min_cosine`` and, for an
    output joined from parts, ``min_part_cosine``)."""
    failures = []
    for name, limits in sorted(tolerance.items()):
        m = measured.get(name)
        if m is None:
            failures.append(f"output {name!r} is missing")
            continue
        if "min_cosine" in limits and m["cosine"] < limits["min_cosine"]:
            failures.append(f"output {name!r}: cosine {m['cosine']:.6f} < {limits['min_cosine']:.6f}")
        if "max_abs" in limits and m["max_abs"] > limits["max_abs"]:
            failures.append(f"output {name!r}: max_abs {m['max_abs']:.3g} > {limits['max_abs']:.3g}")
        if "min_part_cosine" in limits and m.get("min_part_cosine", 0.0) < limits["min_part_cosine"]:
            failures.append(f"output {name!r}: a part has cosine {m.get('min_part_cosine', 0.0):.6f} < "
                            f"{limits['min_part_cosine']:.6f} on its own scale")
    return failures


def sig6(value: float) -> float:
    """Six significant digits: enough for timings, no float noise in the JSON."""
    return float(f"{value:.6g}")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (used by the shim's and the host's bench commands)."""
    value = _parse_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _parse_int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def golden_limit(path: Any, max_mb: float | None = None) -> int:
    """The most bytes a golden file's arrays may decode to: ``max_mb`` MiB when given, else the
    ``EDGEC_GOLDEN_LIMIT_MB`` environment variable, else the larger of :data:`GOLDEN_FLOOR_MB` MiB and
    :data:`GOLDEN_RATIO` times the file's size (genuine golden data, deflated numbers, seldom shrinks that much).

    Raises:
        ValueError: ``EDGEC_GOLDEN_LIMIT_MB`` is not a positive number.
    """
    if max_mb is None and os.environ.get(GOLDEN_ENV):
        try:
            max_mb = float(os.environ[GOLDEN_ENV])
        except ValueError:
            max_mb = -1.0
        if not 0 < max_mb < 1 << 30:
            raise ValueError(f"{GOLDEN_ENV}={os.environ[GOLDEN_ENV]!r}; expected a number of MiB > 0")
    if max_mb is not None:
        return int(max_mb * bounded_npz.MIB)
    return max(GOLDEN_FLOOR_MB * bounded_npz.MIB, GOLDEN_RATIO * os.stat(path).st_size)


def read_golden_arrays(path: Any, max_mb: float | None = None) -> dict[str, np.ndarray]:
    """The arrays of a golden file by name (``inputs/NAME`` ...), read within :func:`golden_limit` with
    :mod:`bounded_npz`: a zip bomb or a header claiming a huge shape is refused before anything is allocated.

    Raises:
        ValueError: (:class:`bounded_npz.ArrayReadError`) the file is not plain array data or passes the limit.
    """
    budget = bounded_npz.Budget(golden_limit(path, max_mb), f"raise it with {GOLDEN_ENV}=MB if the bundle is genuine")
    return bounded_npz.read_npz(path, budget, os.path.basename(path))


def read_golden(path: Any, max_mb: float | None = None) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Golden feeds from ``golden.npz`` (arrays ``inputs/NAME`` and ``outputs/NAME``, samples first, then
    the groups of samples of other shapes, ``inputs@1/NAME`` ...): one input dict and one output dict per
    sample, group after group. Read as :func:`read_golden_arrays` reads it.

    Raises:
        ValueError: the file is not plain array data, passes the limit, or a group's inputs and outputs
            hold different numbers of samples.
    """
    return golden_feeds(read_golden_arrays(path, max_mb))


def golden_feeds(arrays: dict[str, np.ndarray]) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """:func:`read_golden`'s feeds from the golden file's arrays.

    Raises:
        ValueError: a group's inputs and outputs hold different numbers of samples.
    """
    inputs: list[dict[str, np.ndarray]] = []
    outputs: list[dict[str, np.ndarray]] = []
    for tag in golden_groups(arrays):
        given, taken = _group(arrays, f"inputs{tag}"), _group(arrays, f"outputs{tag}")
        if given and taken and len(given) != len(taken):
            raise ValueError(f"golden group {tag or '@0'} has {len(given)} inputs but {len(taken)} outputs")
        inputs += given
        outputs += taken
    return inputs, outputs


def golden_groups(names: Any) -> list[str]:
    """The group tags of golden array names, in order: ``""`` for ``inputs/NAME``, ``"@1"`` for ``inputs@1/NAME`` ..."""
    tags = {key.split("/", 1)[0].removeprefix("inputs").removeprefix("outputs") for key in names if "/" in key}
    numbered = sorted(int(t[1:]) for t in tags if t.startswith("@") and t[1:].isdigit())
    return ([""] if "" in tags else []) + [f"@{n}" for n in numbered]


def _group(arrays: dict[str, np.ndarray], prefix: str) -> list[dict[str, np.ndarray]]:
    names = [k.split("/", 1)[1] for k in arrays if k.split("/", 1)[0] == prefix]
    count = len(arrays[f"{prefix}/{names[0]}"]) if names else 0
    return [{n: np.asarray(arrays[f"{prefix}/{n}"][i]) for n in names} for i in range(count)]
