"""How much golden data a bundle carries: the proof stays, sized to the model.

Rules:
1. ``golden.npz`` is deflated (:func:`edgec.core.bundle.write_golden`), with fixed zip dates.
2. It may take at most the cap: :data:`MODEL_SHARE` of the model's bytes or :data:`FLOOR_BYTES`, whichever is
   larger; ``--golden-max-mb MB`` sets the cap instead (to raise it for a small model with large inputs).
3. When all golden samples do not fit, fewer are kept, spread evenly over them (sample ``i * n // k``, as the
   golden inputs are spread over the calibration set); at least one, even over the cap: a bundle always
   carries a proof. The manifest's ``parity.golden_stored`` says how many were kept, of how many, and why.
   Where the samples come in several shapes (dynamic dims checked at a second size), each shape keeps its
   share and at least one sample, so that ``edgec verify`` runs every shape.
4. Parity is measured on all golden samples (the gates see them all); the tolerance ``edgec verify`` checks
   is derived from the samples kept, which are the ones it can run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgec.core.bundle import shape_groups, write_golden
from edgec.core.types import Feed

MODEL_SHARE = 0.25
FLOOR_BYTES = 1 << 20
"""A small model's golden data may take 1 MiB (eight 224x224x3 images compress to less than that)."""


def golden_cap(model_bytes: int, max_mb: float | None) -> tuple[int, str]:
    """The cap in bytes (rule 2) and what set it, in words for the manifest."""
    if max_mb is not None:
        return int(max_mb * (1 << 20)), f"--golden-max-mb {max_mb:g}"
    share = int(model_bytes * MODEL_SHARE)
    if share > FLOOR_BYTES:
        return share, f"{MODEL_SHARE:.0%} of the model ({model_bytes:,} bytes)"
    return FLOOR_BYTES, f"1 MiB (more than {MODEL_SHARE:.0%} of the model, {model_bytes:,} bytes)"


def kept_indices(count: int, kept: int) -> list[int]:
    """``kept`` of ``count`` samples, spread evenly (rule 3)."""
    return [i * count // kept for i in range(kept)]


def kept_by_shape(groups: list[list[int]], kept: int) -> list[int]:
    """``kept`` samples (at least one per group) spread evenly within each group of one shape, in
    proportion to the groups' sizes (rule 3); indices in the groups' order."""
    count = sum(len(g) for g in groups)
    quotas = [max(1, len(g) * kept // count) for g in groups]
    while sum(quotas) > max(kept, len(groups)):
        largest = max(range(len(quotas)), key=lambda i: quotas[i])
        quotas[largest] -= 1
    for i in range(len(groups)):  # hand out what rounding left, to the groups that have samples to spare
        while sum(quotas) < kept and quotas[i] < len(groups[i]):
            quotas[i] += 1
    return [group[j] for group, quota in zip(groups, quotas) for j in kept_indices(len(group), quota)]


def write_sized_golden(path: Path, inputs: list[Feed], outputs: list[Feed], model_bytes: int,
                       max_mb: float | None) -> tuple[list[int], dict[str, Any]]:
    """Write ``golden.npz`` with as many samples as fit the cap (rules 2-3).

    Returns:
        The indices of the samples kept and the manifest's ``parity.golden_stored`` record.
    """
    cap, why = golden_cap(model_bytes, max_mb)
    count = kept = len(inputs)
    groups = shape_groups(inputs, outputs)
    least = len(groups)
    while True:
        index = kept_by_shape(groups, kept)
        write_golden(path, [inputs[i] for i in index], [outputs[i] for i in index])
        size = path.stat().st_size
        if size <= cap or kept <= least:
            break
        kept = max(least, min(kept - 1, int(cap * kept / size)))  # samples compress alike: scale by the overshoot
    kept = len(index)
    record: dict[str, Any] = {"samples": kept, "of": count, "bytes": size, "cap_bytes": cap, "cap": why}
    if kept < count:
        record["reason"] = f"{count} samples do not fit in {cap:,} bytes ({why}); kept {kept}, evenly spaced"
    if len(groups) > 1:
        record["shapes"] = len(groups)
    if size > cap:
        what = "one sample takes" if least == 1 else f"one sample of each of its {least} shapes takes"
        record["reason"] = (f"{what} {size:,} bytes, over the cap of {cap:,} ({why}); kept {'one' if kept == 1 else kept}, as a bundle "
                            "always carries a proof (raise the cap with --golden-max-mb)")
    return index, record


def model_bytes(staging: Path, files: tuple[str, ...]) -> int:
    """Bytes of the files a target wrote (folders, such as an ``.mlpackage``, counted file by file)."""
    total = 0
    for rel in files:
        path = staging / rel
        paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total += sum(p.stat().st_size for p in paths)
    return total
