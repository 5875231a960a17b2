"""Static INT8 of a MobileNet/EfficientNet-style torch model (``F.relu6`` after convs, depthwise convs behind
TF 'SAME' ``ZeroPad2d``) on the executorch target: the conv's output is quantized after its ReLU6, on [0, 6],
not on the conv's own pre-activation range (which XNNPACK's quantizer used, as it fuses only ``relu``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build

torch = pytest.importorskip("torch", reason="pip install 'edgec[executorch]'")
pytest.importorskip("executorch", reason="pip install 'edgec[executorch]'")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GAIN = 12.0
"""Conv weights scaled up so pre-activations span about +-50 while ReLU6 keeps [0, 6] (as in trained nets)."""


class Lite(torch.nn.Module):  # type: ignore[name-defined]
    """Stem conv + ReLU6, one inverted residual (expand, padded depthwise, project), ReLU6 head, pool, fc."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem, self.bn0 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.expand, self.bn1 = nn.Conv2d(16, 48, 1, bias=False), nn.BatchNorm2d(48)
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.depthwise, self.bn2 = nn.Conv2d(48, 48, 3, 2, groups=48, bias=False), nn.BatchNorm2d(48)
        self.project, self.bn3 = nn.Conv2d(48, 24, 1, bias=False), nn.BatchNorm2d(24)
        self.head, self.relu6 = nn.Conv2d(24, 64, 1), nn.ReLU6()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Any) -> Any:
        f = torch.nn.functional
        x = f.relu6(self.bn0(self.stem(x)))
        x = f.relu6(self.bn1(self.expand(x)))
        x = f.relu6(self.bn2(self.depthwise(self.pad(x))))
        x = self.relu6(self.head(self.bn3(self.project(x))))
        return self.fc(x.mean((2, 3)))


def _lite_pt2(path: Path) -> Path:
    torch.manual_seed(0)
    model = Lite().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.mul_(GAIN / module.weight.std() / module.weight[0].numel() ** 0.5)
    program = torch.export.export(model, (torch.zeros(1, 3, 16, 16),))
    torch.export.save(program, str(path))
    return path


def test_relu6_convs_quantize_after_the_clamp_and_keep_int8_parity(tmp_path: Path) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((32, 1, 3, 16, 16)).astype(np.float32))
    config = BuildConfig(source=str(_lite_pt2(tmp_path / "lite.pt2")), target="executorch", precision="int8",
                         calib=calib, int8_mode="static", out=tmp_path / "out", allow_degraded=True)
    outcome = build(config)
    delegated = outcome.manifest.target_details["operators"]["delegated"]
    assert delegated["aten.convolution.default"] == 5  # every conv, depthwise too, runs in XNNPACK
    assert outcome.manifest.target_details["quantization"]["activations"] == "int8 per tensor"
    parity = outcome.manifest.parity["outputs"]["output"]
    # Measured: 0.9997 and 1.0 here; -0.45 before (conv outputs quantized on their own wide range, then clamped).
    assert parity["cosine"] > 0.995 and parity["top1_agreement"] == 1.0
