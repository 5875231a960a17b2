"""A bundle's golden.npz keeps the proof, sized to the model: deflated, at most 25% of the model or 1 MiB (or
--golden-max-mb), fewer samples when they do not fit, the choice recorded in the manifest; rebuilds stay
byte-identical and `edgec verify` passes on what was kept.

The checks that build nothing; the builds are in tests/integration/compiler/test_golden_size.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_sized_golden_keeps_one_sample_over_a_tiny_cap_and_says_why(tmp_path: Path) -> None:
    from edgec.compiler.golden_size import write_sized_golden

    rng = np.random.default_rng(0)
    inputs = [{"x": rng.random((3, 64, 64), dtype=np.float32)} for _ in range(8)]
    outputs = [{"y": rng.random(4, dtype=np.float32)} for _ in range(8)]
    kept, record = write_sized_golden(tmp_path / "g.npz", inputs, outputs, model_bytes=1000, max_mb=0.01)
    assert kept == [0] and record["samples"] == 1 and record["bytes"] > record["cap_bytes"]
    assert "kept one" in record["reason"] and "--golden-max-mb" in record["reason"]
    kept, record = write_sized_golden(tmp_path / "g.npz", inputs, outputs, model_bytes=1000, max_mb=0.1)
    assert kept == [i * 8 // len(kept) for i in range(len(kept))] and 1 < len(kept) < 8  # spread over the set
    assert record["bytes"] <= record["cap_bytes"]


def test_cap_is_a_quarter_of_a_large_model() -> None:
    from edgec.compiler.golden_size import golden_cap

    assert golden_cap(20 << 20, None)[0] == 5 << 20
    assert golden_cap(1 << 20, None)[0] == 1 << 20
    assert golden_cap(1 << 20, 3)[0] == 3 << 20
