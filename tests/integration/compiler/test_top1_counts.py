"""Golden top-1 agreement is shown as counts with its near-ties (``top-1 4/8 (5 near-ties)``) by build,
verify and inspect, and carried by the manifest; manifests that recorded only the fraction still read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.cli import run_cli
from tests.support.models import make_calib, make_conv_onnx

COUNTS = re.compile(r"top-1 (\d+)/(\d+) \((\d+) near-ties?\)")


@pytest.fixture(scope="module")
def int8(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("top1")
    model = make_conv_onnx(folder / "tiny.onnx")
    calib = make_calib(folder / "calib.npz", count=32)
    proc = run_cli("build", str(model), "--precision", "int8", "--calib", str(calib), "--out", str(folder / "out"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return folder / "out" / "tiny-onnx-int8", proc.stdout


def test_build_prints_and_the_manifest_records_top1_counts_with_near_ties(int8: tuple[Path, str]) -> None:
    bundle, stdout = int8
    logits = json.loads((bundle / "manifest.json").read_text())["parity"]["outputs"]["logits"]
    agree, rows, ties = logits["top1_agree"], logits["top1_rows"], logits["near_ties"]
    assert rows == 8 and 0 <= rows - agree <= ties <= rows
    assert logits["top1_agreement"] == pytest.approx(agree / rows)
    line = next(line for line in stdout.splitlines() if "parity logits" in line)
    assert COUNTS.search(line).groups() == (str(agree), str(rows), str(ties))  # type: ignore[union-attr]
    assert "top1 agreement" not in stdout


def test_verify_and_inspect_print_top1_counts(int8: tuple[Path, str]) -> None:
    bundle, _ = int8
    verify = run_cli("verify", str(bundle))
    assert verify.returncode == 0, verify.stderr
    assert COUNTS.search(verify.stdout) and "min cosine" in verify.stdout
    inspect = run_cli("inspect", str(bundle))
    assert COUNTS.search(inspect.stdout) and "top1 0." not in inspect.stdout


def test_a_manifest_with_only_the_agreement_fraction_still_inspects_as_counts(int8: tuple[Path, str], tmp_path: Path) -> None:
    import shutil

    old = Path(shutil.copytree(int8[0], tmp_path / "old"))
    manifest = json.loads((old / "manifest.json").read_text())
    logits = manifest["parity"]["outputs"]["logits"]
    for key in ("top1_agree", "top1_rows", "near_ties"):
        del logits[key]
    logits["top1_agreement"] = 0.5
    (old / "manifest.json").write_text(json.dumps(manifest))
    inspect = run_cli("inspect", str(old))
    assert inspect.returncode == 0, inspect.stderr
    assert "cosine" in inspect.stdout and "top-1 4/8\n" in inspect.stdout + "\n"
