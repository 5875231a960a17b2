"""openvino target, pt2 route: layers are the torch modules that called the ops (``nn_module_stack``), not the
FX node names OpenVINO's PyTorch frontend gives its ops (issue 19)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build

pytest.importorskip("openvino")

MODEL = '''
import numpy as np
import torch
from torch import nn


class Fragile(nn.Module):
    """Six convs in a ModuleList, one nn.ReLU called after each; convs.2 reads an activation with a 300x channel."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.convs, cin = nn.ModuleList(), 3
        for i in range(6):
            conv = nn.Conv2d(cin, 8, 3, padding=1)
            w = (rng.standard_normal((8, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
            if i == 1:
                w[0] *= 300.0
            if i == 2:
                w[:, 0] /= 300.0
            conv.weight.data, cin = torch.from_numpy(w), 8
            conv.bias.data.zero_()
            self.convs.append(conv)
        self.act = nn.ReLU()
        self.fc = nn.Linear(8 * 64, 10)

    def forward(self, x):
        for conv in self.convs:
            x = self.act(conv(x))
        return self.fc(torch.flatten(x, 1))


def factory():
    torch.manual_seed(0)
    return Fragile().eval(), (torch.randn(1, 3, 8, 8),)
'''


@pytest.fixture(scope="module")
def torch_fragile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("torch-fragile")
    (folder / "fragile_torch.py").write_text(MODEL)
    np.savez(folder / "calib.npz", x=np.random.default_rng(1).standard_normal((64, 3, 8, 8)).astype(np.float32))
    return {"source": folder / "fragile_torch.py", "calib": folder / "calib.npz"}


def _build(assets: dict[str, Path], out: Path, **kw):
    return build(BuildConfig(source=f"{assets['source']}:factory", target="openvino", precision="int8",
                             calib=assets["calib"], out=out, allow_degraded=True, **kw))


@pytest.mark.slow
def test_layer_report_names_torch_modules_and_each_call_of_a_shared_module(torch_fragile, tmp_path: Path) -> None:
    bundle = _build(torch_fragile, tmp_path, report_layers=True).bundle_dir
    layers = json.loads((bundle / "layers.json").read_text())["layers"]
    by_layer = {d["layer"]: d for d in layers}
    assert layers[0]["layer"] == "convs.2"  # the conv reading the outlier activation, as model.named_modules() names it
    assert layers[0]["node"].startswith("convolution_2/")  # what nncf's ignored scope takes is still the op's name
    assert {f"convs.{i}" for i in range(6)} | {"act", *(f"act@{i}" for i in range(1, 6)), "fc"} <= set(by_layer)
    assert not any(name.startswith(("convolution", "relu", "linear")) for name in by_layer)  # no FX node names left


@pytest.mark.slow
def test_max_drop_keeps_the_torch_module_in_float(torch_fragile, tmp_path: Path) -> None:
    outcome = _build(torch_fragile, tmp_path, max_drop=0.02, metric="cosine")
    mp = outcome.manifest.model_extra["mixed_precision"]
    assert mp["float_layers"] == ["convs.2"] and mp["drop"] <= 0.02
    assert all(node.startswith("convolution_2/") for node in mp["float_nodes"])
