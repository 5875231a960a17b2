"""What the farm keeps in a store and sends to workers: parcels carry the files their paths name, cache entries
in a store are used only when complete and intact, bundles only once their manifest is there."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgec.cloud_sync.farm_store import StoreEntries, entry_unit, pack, unpack
from edgec.cloud_sync.store import open_store
from edgec.compiler.cache import StageCache

pytest.importorskip("obstore")


@dataclasses.dataclass(frozen=True)
class Holder:
    model: Path
    other: Path
    missing: Path
    text: str


def test_parcel_carries_whole_cache_entries_and_points_paths_at_the_unpacked_copies(tmp_path: Path) -> None:
    entry = tmp_path / "cache" / "ab" / "abcdef"
    entry.mkdir(parents=True)
    (entry / "model.onnx").write_bytes(b"graph")
    (entry / "model.onnx.data").write_bytes(b"weights beside the model")
    loose = tmp_path / "eval.npz"
    loose.write_bytes(b"eval data")
    (tmp_path / "unrelated.bin").write_bytes(b"x" * 1000)
    parcel = pack(Holder(entry / "model.onnx", loose, tmp_path / "gone.onnx", "kept"), entry_unit((tmp_path / "cache",)))
    got = unpack(parcel, tmp_path / "worker")
    assert got.model.read_bytes() == b"graph" and got.model.with_name("model.onnx.data").read_bytes() == b"weights beside the model"
    assert got.other.read_bytes() == b"eval data" and str(got.other).startswith(str(tmp_path / "worker"))
    assert got.missing == tmp_path / "gone.onnx" and got.text == "kept"  # what does not exist travels as a name
    assert not list((tmp_path / "worker").rglob("unrelated.bin"))


def test_stage_cache_takes_complete_entries_from_the_store_and_ignores_tampered_ones(tmp_path: Path) -> None:
    remote = StoreEntries(open_store(tmp_path / "shared"))
    calls = []

    def produce(folder: Path) -> dict[str, str]:
        calls.append(folder)
        (folder / "model.onnx").write_bytes(b"converted")
        return {"format": "onnx"}

    first = StageCache(tmp_path / "machine-a", remote=remote)
    first.get_or_create("k" * 64, produce)
    second = StageCache(tmp_path / "machine-b", remote=remote)
    entry, meta, hit = second.get_or_create("k" * 64, produce)
    assert (hit, meta, len(calls)) == (True, {"format": "onnx"}, 1)
    assert (entry / "model.onnx").read_bytes() == b"converted"

    open_store(tmp_path / "shared").put(f"kk/{'k' * 64}/model.onnx", b"tampered")
    third = StageCache(tmp_path / "machine-c", remote=remote)
    entry, _, hit = third.get_or_create("k" * 64, produce)
    assert not hit and len(calls) == 2 and (entry / "model.onnx").read_bytes() == b"converted"
