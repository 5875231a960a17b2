"""What a precision buys on each target is said where the user decides: ``edgec targets`` lists each
target's measured notes, and a build of that precision repeats its note in the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.targets.base import TARGETS
from tests.support.cli import run_cli
from tests.support.models import make_conv_onnx


@pytest.mark.slow  # edgec targets imports every target's converter (about 18 s here)
def test_edgec_targets_lists_each_precision_note_under_its_target() -> None:
    proc = run_cli("targets")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name in ("onnx", "openvino", "tflite"):
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{name} "))
        block = []
        for line in lines[start + 1:]:
            if not line.startswith(" "):
                break
            block.append(line.strip())
        assert f"fp16: {TARGETS.get(name).precision_notes['fp16']}" in block, (name, block)


def test_an_fp16_build_prints_its_note_and_an_fp32_build_prints_none(tmp_path: Path) -> None:
    model = make_conv_onnx(tmp_path / "tiny.onnx")
    note = TARGETS.get("onnx").precision_notes["fp16"]
    fp16 = run_cli("build", str(model), "--precision", "fp16", "--out", str(tmp_path / "out"), "--quiet")
    assert fp16.returncode == 0, fp16.stderr
    assert f"  fp16 on onnx: {note}" in fp16.stdout.splitlines()
    fp32 = run_cli("build", str(model), "--out", str(tmp_path / "out"), "--quiet")
    assert fp32.returncode == 0, fp32.stderr
    assert note not in fp32.stdout and " on onnx: " not in fp32.stdout
