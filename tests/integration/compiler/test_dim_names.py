"""Symbolic dims of PyTorch sources are named after what they are (``batch``, ``seq``, the user's
``Dim`` name), never torch.export's shape symbols (``s77``): in the manifest, ``edgec inspect``, the
ONNX and OpenVINO bundles, and serving's errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.cli import run_cli

TORCH_SYMBOL = re.compile(r"\b[su]\d+\b")

TOKENS = '''
import torch
from torch.export import Dim


class Tagger(torch.nn.Module):
    """Token ids and attention mask (batch, seq) -> per-token class scores (batch, seq, 3)."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, ids, mask):
        return self.head(self.emb(ids.clamp(0, 49)) * mask.unsqueeze(-1).to(torch.float32))


def _example():
    torch.manual_seed(0)
    return Tagger().eval(), (torch.randint(0, 50, (2, 5)), torch.ones(2, 5, dtype=torch.int64))


def unnamed():
    module, example = _example()
    axes = {0: Dim.DYNAMIC, 1: Dim.DYNAMIC}
    return module, example, {"dynamic_shapes": {"ids": axes, "mask": axes}, "output_names": ["scores"]}


def named():
    module, example = _example()
    axes = {0: Dim("rows", max=64), 1: Dim("tokens", max=128)}
    return module, example, {"dynamic_shapes": {"ids": axes, "mask": axes}, "output_names": ["scores"]}
'''




# ----------------------------------------------------------------------------------------------- naming rules



# ----------------------------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tokens")
    (folder / "tagger.py").write_text(TOKENS)
    return folder


def _no_torch_symbols(text: str) -> None:
    assert not TORCH_SYMBOL.findall(text), text


def test_onnx_bundle_of_a_factory_names_batch_and_seq_in_manifest_model_and_inspect(tagger: Path) -> None:
    onnx = pytest.importorskip("onnx")
    proc = run_cli("build", f"{tagger / 'tagger.py'}:unnamed", "--out", str(tagger / "out"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    bundle = tagger / "out" / "tagger-onnx-fp32"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [s["shape"] for s in manifest["inputs"]] == [["batch", "seq"], ["batch", "seq"]]
    assert manifest["outputs"][0]["shape"] == ["batch", "seq", 3]
    model = onnx.load(str(bundle / "model.onnx"))
    dims = {d.dim_param for v in [*model.graph.input, *model.graph.output, *model.graph.value_info]
            for d in v.type.tensor_type.shape.dim if d.dim_param}
    assert dims and dims <= {"batch", "seq"}
    text = run_cli("inspect", str(bundle)).stdout
    assert "ids: int64[batch, seq]" in text and "scores: float32[batch, seq, 3]" in text
    _no_torch_symbols(text + json.dumps(manifest))


def test_a_pt2_file_without_dim_names_is_inspected_with_batch_and_seq(tagger: Path) -> None:
    torch = pytest.importorskip("torch")
    import importlib.util

    spec = importlib.util.spec_from_file_location("tagger_module", tagger / "tagger.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model, example, extras = module.named()
    torch.export.save(torch.export.export(model, example, dynamic_shapes=extras["dynamic_shapes"]), str(tagger / "t.pt2"))
    text = run_cli("inspect", str(tagger / "t.pt2")).stdout
    assert "ids: int64[batch, seq]" in text and "output: float32[batch, seq, 3]" in text
    _no_torch_symbols(text)


def test_the_users_dim_names_reach_the_openvino_bundle(tagger: Path) -> None:
    pytest.importorskip("openvino")
    proc = run_cli("build", f"{tagger / 'tagger.py'}:named", "--target", "openvino", "--out", str(tagger / "ov"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tagger / "ov" / "tagger-openvino-fp32" / "manifest.json").read_text())
    assert [s["shape"] for s in manifest["inputs"]] == [["rows", "tokens"], ["rows", "tokens"]]
    assert manifest["outputs"][0]["shape"] == ["rows", "tokens", 3]


def test_serving_rejects_a_wrong_shape_naming_batch_and_seq(tagger: Path) -> None:
    pytest.importorskip("uvicorn")
    from tests.support.serving import serving

    bundle = tagger / "out" / "tagger-onnx-fp32"
    if not bundle.is_dir():
        assert run_cli("build", f"{tagger / 'tagger.py'}:unnamed", "--out", str(tagger / "out"), "--quiet").returncode == 0
    with serving(bundle) as (url, _):
        ok = httpx.post(f"{url}/v1/predict", json={"inputs": {"ids": [[1, 2, 3]], "mask": [[1, 1, 1]]}})
        assert ok.status_code == 200, ok.text
        assert np.asarray(ok.json()["outputs"]["scores"]).shape == (1, 3, 3)
        bad = httpx.post(f"{url}/v1/predict", json={"inputs": {"ids": [[[1, 2, 3]]], "mask": [[1, 1, 1]]}})
    assert bad.status_code == 422
    assert "expected (batch, seq)" in bad.text
    _no_torch_symbols(bad.text)
