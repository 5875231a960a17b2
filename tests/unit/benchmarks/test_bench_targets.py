"""``edgec bench`` on a mix of targets, as the demo leaves them: bundles this host cannot run get a row
saying why, sizes count every model file, golden top-1 agreement is shown as counts with its meaning.

The checks that build nothing; the builds are in tests/integration/benchmarks/test_bench_targets.py."""

from __future__ import annotations

import numpy as np


def test_agreement_counts_bound_every_flip_by_the_near_ties() -> None:
    from edgec.benchmarks.bench import agreement_counts

    rng = np.random.default_rng(3)
    reference = rng.standard_normal((64, 1, 10))
    noisy = reference + rng.uniform(-0.2, 0.2, reference.shape)
    max_abs = float(np.abs(noisy - reference).max())
    agree = float(np.mean(reference.argmax(-1) == noisy.argmax(-1)))
    counts = agreement_counts(reference, agree, max_abs)
    flips = 64 - counts["top1_agree"]
    assert counts["top1_rows"] == 64 and 0 < flips <= counts["near_ties"] < 64
    margins = np.diff(np.sort(reference[:, 0], axis=1)[:, -2:], axis=1).ravel()
    assert counts["near_ties"] == int(np.sum(margins <= 2 * max_abs))
