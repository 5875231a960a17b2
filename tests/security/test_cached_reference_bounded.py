"""A stage-cache reference entry is read within its own size: a bomb or a lying header is a miss, never an allocation.

The stage cache can be shared (``--cache-store``), so whoever writes to the store writes the entries other
builds read. ``np.load`` inflated a 1 MB ``outputs.npz`` member to 1 GiB (and returned those zeros as the
model's reference outputs), or raised on a header claiming a huge shape. Now the entry is read with
``runtime_shims/bounded_npz.py`` within the file's size (the cache stores its members uncompressed), and
an entry that fails is removed and the outputs are computed again.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.cache import StageCache, scan
from edgec.compiler.cached_stages import OUTPUTS, cached_reference
from edgec.compiler.importers.onnx import OnnxImporter
from edgec.core.types import Feed, ModelArtifact
from edgec.frameworks import onnx_utils
from tests.support.models import make_conv_onnx
from tests.support.npz_bombs import MIB, deflated_member, npy_header, write_zip

BOMB_MB = 1024


class CountingImporter(OnnxImporter):
    """The ONNX importer (onnxruntime), counting its reference runs."""

    def __init__(self) -> None:
        self.runs = 0

    def reference(self, artifact: ModelArtifact, feeds: list[Feed]) -> list[Feed]:
        self.runs += 1
        return super().reference(artifact, feeds)


@pytest.fixture
def stored(tmp_path: Path) -> tuple[StageCache, ModelArtifact, list[Feed], list[Feed], Path]:
    """A cache holding the reference entry of the tiny CNN on two feeds: (cache, artifact, feeds, outputs, entry)."""
    artifact = onnx_utils.artifact_from_file(make_conv_onnx(tmp_path / "tiny.onnx"))
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(2)]
    cache = StageCache(tmp_path / "cache")
    outputs = cached_reference(cache, OnnxImporter(), artifact, feeds, {})
    (entry,) = [e.path for e in scan(tmp_path / "cache").entries]
    return cache, artifact, feeds, outputs, entry


def bomb(path: Path) -> None:
    """``outputs.npz`` whose member ``0/logits`` is 1 KiB deflated and 1 GiB inflated, declaring its true size."""
    header = npy_header((BOMB_MB * MIB // 4,))
    write_zip(path, [deflated_member("0/logits.npy", header, BOMB_MB * MIB),
                     deflated_member("1/logits.npy", npy_header((0,)), 0)])


def liar(path: Path) -> None:
    """``outputs.npz`` whose member headers claim 10^12 floats in a few bytes."""
    write_zip(path, [deflated_member(f"{i}/logits.npy", npy_header((10**12,)), 0) for i in range(2)])


@pytest.mark.parametrize("hostile", [bomb, liar], ids=["zip-bomb", "lying-header"])
def test_a_hostile_reference_entry_is_a_miss_read_without_inflating_it(stored, hostile) -> None:
    cache, artifact, feeds, expected, entry = stored
    hostile(entry / OUTPUTS)
    importer = CountingImporter()
    tracemalloc.start()
    try:
        outputs = cached_reference(cache, importer, artifact, feeds, {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, f"reading the entry allocated {peak / MIB:.0f} MiB"
    assert importer.runs == 1  # the bad entry was a miss: the outputs were computed again
    assert [list(o) for o in outputs] == [["logits"], ["logits"]]
    for got, want in zip(outputs, expected):
        np.testing.assert_array_equal(got["logits"], want["logits"])
    again = CountingImporter()  # the bad entry was replaced by a good one: the next build hits it
    assert [o["logits"].tolist() for o in cached_reference(cache, again, artifact, feeds, {})] == \
           [o["logits"].tolist() for o in expected]
    assert again.runs == 0 and (entry / OUTPUTS).stat().st_size < MIB


def test_an_entry_whose_names_lie_is_a_miss(stored) -> None:
    """Meta naming outputs the file does not hold (or another number of feeds) is refused, not a KeyError."""
    import json

    cache, artifact, feeds, expected, entry = stored
    meta = json.loads((entry / "entry.json").read_text())
    (entry / "entry.json").write_text(json.dumps({**meta, "names": [["logits", "nope"], ["logits"]]}))
    importer = CountingImporter()
    outputs = cached_reference(cache, importer, artifact, feeds, {})
    assert importer.runs == 1 and [list(o) for o in outputs] == [["logits"], ["logits"]]


def test_a_genuine_entry_is_read_back_exactly(stored) -> None:
    cache, artifact, feeds, expected, _ = stored
    importer = CountingImporter()
    outputs = cached_reference(cache, importer, artifact, feeds, {})
    assert importer.runs == 0
    for got, want in zip(outputs, expected):
        assert got["logits"].dtype == want["logits"].dtype and got["logits"].shape == (2, 10)
        np.testing.assert_array_equal(got["logits"], want["logits"])
