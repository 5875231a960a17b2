"""The accuracy gate's hint for a collapsed bundle names what the target itself offers first."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import _collapse_gate, get_target
from edgec.core.errors import AccuracyGateError


def _hint(tmp_path: Path, target: str, **kw) -> str:
    config = BuildConfig(source="m.onnx", target=target, out=tmp_path, precision="int8", **kw)
    with pytest.raises(AccuracyGateError) as caught:
        _collapse_gate(config, get_target(target), ["output 'y' has cosine 0.5"])
    return caught.value.hint or ""


def test_a_collapsed_static_int8_onnx_bundle_names_the_compute_op_set_first(tmp_path: Path) -> None:
    hint = _hint(tmp_path, "onnx", calib=tmp_path / "c.npz")
    assert hint.startswith("try --target-option quantize_ops=compute") and "--max-drop" in hint


def test_targets_without_a_hint_of_their_own_give_the_general_advice(tmp_path: Path) -> None:
    hint = _hint(tmp_path, "openvino", calib=tmp_path / "c.npz")
    assert hint.startswith("try --max-drop 0.01") and "quantize_ops" not in hint


def test_dynamic_int8_names_static_mode_not_the_op_set(tmp_path: Path) -> None:
    hint = _hint(tmp_path, "onnx")
    assert hint.startswith("try --int8-mode static") and "quantize_ops" not in hint
