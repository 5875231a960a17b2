"""Real-ish inputs for the zoo: rendered text, photos, speech-like audio, real file bytes. Offline, seeded.

Every maker has the signature ``maker(model_file, count, seed) -> {input name: array}`` with the samples on
the first axis, each sample at the model input's full rank (batch axis included), ready for ``np.savez``
as ``--calib`` data. The same maker with another seed gives the held-out evaluation set.

- **text** (OCR): words and numbers drawn with PIL's bundled FreeType font on paper-like backgrounds, with
  blur and noise; lines for the recognizer and the orientation classifier (half of them upside down),
  pages of lines for the detector.
- **photos** (detectors, face nets): crops of scikit-learn's bundled sample photos
  (:func:`sklearn.datasets.load_sample_images`: a temple in China and a flower), flipped and rescaled.
  Held-out crops come from the same two photos at other places and scales.
- **speech-like audio** (VAD, speaker, pitch): syllables of a glottal pulse train shaped by three formants,
  pitch contours and jitter, fricative noise bursts, pauses and room noise; stateful models get the states
  their FP32 model reaches when it streams the audio.
- **file bytes** (magika): the first and last KiB of real files of this Python installation (source,
  bytecode, shared objects, JSON, text, images, archives), as magika's own feature extraction takes them.
- **classifier inputs** (EfficientNet-Lite0, fer): photo crops and drawn grey faces, of which the third the FP32
  model is surest of is kept; **sentences** (USE): English ones put together from parts and a few in other
  languages, tokenized with the wheel's own SentencePiece model.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]
SAMPLE_RATE = 16000
WORDS = ("invoice", "total", "2026", "edge", "model", "Paris", "street", "No.", "42", "price", "$19.99", "date",
         "OPEN", "kernel", "quantize", "hello", "world", "receipt", "item", "Qty", "station", "12:45", "north",
         "coffee", "tea", "label", "order", "#A-17", "phone", "0151", "river", "garden", "LIMIT", "exit")


# --- text ---------------------------------------------------------------------------------------------

def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _text_line(rng: np.random.Generator, height: int) -> Any:
    """One line of 1-4 words, dark on a light background, cropped to its text, as a PIL image."""
    from PIL import Image, ImageDraw, ImageFilter

    text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 5))))
    font = _font(int(height * rng.uniform(0.55, 0.8)))
    left, top, right, bottom = font.getbbox(text)
    paper = tuple(int(v) for v in rng.integers(190, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 80, 3))
    image = Image.new("RGB", (right - left + 16, height), paper)
    ImageDraw.Draw(image).text((8 - left, (height - (bottom - top)) // 2 - top), text, fill=ink, font=font)
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.8))))


def _noisy(array: np.ndarray, rng: np.random.Generator, sigma: float = 6.0) -> np.ndarray:
    return np.clip(array.astype(np.float32) + rng.normal(0.0, sigma, array.shape), 0, 255)


def _line_array(rng: np.random.Generator, height: int, width: int, upside_down: bool = False) -> np.ndarray:
    """A text line resized to ``height`` (aspect kept, at most ``width``), right-padded: PP-OCR's recognizer input."""
    from PIL import Image

    line = _text_line(rng, height)
    scaled = line.resize((min(width, max(8, round(line.width * height / line.height))), height), Image.Resampling.BILINEAR)
    if upside_down:
        scaled = scaled.rotate(180)
    canvas = np.zeros((height, width, 3), np.float32)
    canvas[:, : scaled.width] = _noisy(np.asarray(scaled), rng)
    return ((canvas / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


def text_lines(model_file: Path, count: int, seed: int) -> Feeds:
    """Lines of 48x320 for PP-OCRv4's recognizer (input ``x``, scaled to [-1, 1])."""
    rng = np.random.default_rng(seed)
    return {"x": np.stack([_line_array(rng, 48, 320)[None] for _ in range(count)])}


def text_lines_cls(model_file: Path, count: int, seed: int) -> Feeds:
    """Lines of 48x192 for PP-OCR's orientation classifier, every other one rotated by 180 degrees."""
    rng = np.random.default_rng(seed)
    return {"x": np.stack([_line_array(rng, 48, 192, upside_down=bool(i % 2))[None] for i in range(count)])}


def _page(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A 'page': a few text lines of different sizes pasted on paper, as HxWx3 uint8-range floats."""
    from PIL import Image

    page = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(200, 256, 3)))
    y = int(rng.integers(4, 30))
    while y < height - 24:
        line = _text_line(rng, int(rng.integers(18, 44)))
        if line.width > width - 8:
            line = line.crop((0, 0, width - 8, line.height))
        page.paste(line, (int(rng.integers(0, width - line.width)), y))
        y += line.height + int(rng.integers(6, 40))
    return _noisy(np.asarray(page), rng, 4.0)


def text_pages(model_file: Path, count: int, seed: int) -> Feeds:
    """Pages of 320x480 for PP-OCRv4's text detector (ImageNet mean/std normalisation, input ``x``)."""
    rng = np.random.default_rng(seed)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    pages = [((_page(rng, 320, 480) / 255.0 - mean) / std).transpose(2, 0, 1)[None] for _ in range(count)]
    return {"x": np.stack(pages).astype(np.float32)}


# --- photos -------------------------------------------------------------------------------------------

def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(image) for image in load_sample_images().images]


def _crops(rng: np.random.Generator, count: int, height: int, width: int) -> Iterator[np.ndarray]:
    """Random crops of the sample photos with the output's aspect ratio, resized to HxW (float 0-255, HxWx3)."""
    from PIL import Image

    photos = _photos()
    for _ in range(count):
        photo = photos[int(rng.integers(len(photos)))]
        scale = rng.uniform(0.3, 1.0)
        h = int(min(photo.shape[0], photo.shape[1] * height / width) * scale)
        w = int(h * width / height)
        top, left = int(rng.integers(0, photo.shape[0] - h + 1)), int(rng.integers(0, photo.shape[1] - w + 1))
        crop = Image.fromarray(photo[top:top + h, left:left + w]).resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(crop, np.float32)
        yield array[:, ::-1] if rng.random() < 0.5 else array


def photos_320(model_file: Path, count: int, seed: int) -> Feeds:
    """320x320 RGB crops scaled to [0, 1] for YOLOv8 (input ``images``)."""
    rng = np.random.default_rng(seed)
    return {"images": np.stack([(c / 255.0).transpose(2, 0, 1)[None] for c in _crops(rng, count, 320, 320)]).astype(np.float32)}


def _mtcnn(crops: Iterator[np.ndarray]) -> np.ndarray:
    """MTCNN's scaling: (pixel - 127.5) / 128, NCHW, a batch axis per sample."""
    return np.stack([((c - 127.5) * 0.0078125).transpose(2, 0, 1)[None] for c in crops]).astype(np.float32)


def photos_pnet(model_file: Path, count: int, seed: int) -> Feeds:
    """96x128 crops for MTCNN's PNet (input ``x``)."""
    return {"x": _mtcnn(_crops(np.random.default_rng(seed), count, 96, 128))}


def face_crops_48(model_file: Path, count: int, seed: int) -> Feeds:
    """48x48 crops for MTCNN's ONet (input ``x``): the candidate windows ONet scores."""
    return {"x": _mtcnn(_crops(np.random.default_rng(seed), count, 48, 48))}


# --- speech-like audio --------------------------------------------------------------------------------

def _syllable(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A voiced syllable: harmonics of a drifting, jittered f0 weighted by three formant resonances."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = rng.uniform(90, 240) * (1 + rng.uniform(-0.15, 0.15) * t / max(seconds, 1e-3))
    f0 = f0 * (1 + 0.01 * rng.standard_normal(t.shape).cumsum() / np.sqrt(len(t)))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    formants = rng.uniform([250, 800, 2300], [850, 2300, 3200])
    wave = np.zeros_like(t)
    for k in range(1, int(4000 / f0.mean())):
        freq = k * f0.mean()
        gain = sum(np.exp(-((freq - f) / 120.0) ** 2) for f in formants) + 0.05
        wave += gain / k * np.sin(k * phase)
    envelope = np.sin(np.pi * np.linspace(0, 1, len(t))) ** 0.6
    return (wave * envelope).astype(np.float32)


def speech_like(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Phrases of syllables and fricatives separated by pauses, at -30 dBFS plus room noise, 16 kHz."""
    parts, total = [], 0
    while total < seconds * SAMPLE_RATE:
        if rng.random() < 0.25:
            part = np.zeros(int(rng.uniform(0.1, 0.6) * SAMPLE_RATE), np.float32)
        elif rng.random() < 0.2:
            noise = rng.standard_normal(int(rng.uniform(0.05, 0.15) * SAMPLE_RATE)).astype(np.float32)
            part = np.diff(noise, prepend=0) * 0.3
        else:
            part = _syllable(rng, rng.uniform(0.08, 0.3))
        parts.append(part)
        total += len(part)
    audio = np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]
    audio *= 10 ** (-30 / 20) / max(float(np.sqrt(np.mean(audio ** 2))), 1e-6)
    return (audio + rng.normal(0, 10 ** (-60 / 20), audio.shape)).astype(np.float32)


class _KerasSession:
    """onnxruntime's ``get_outputs``/``run`` over a Keras model file, loaded as edgec's importer loads it (an H5
    file's config is checked for Lambda layers first; safe mode): the FP32 reference of a Keras zoo entry."""

    def __init__(self, model_file: Path) -> None:
        from types import SimpleNamespace

        from edgec.compiler.importers.tensorflow import keras_output_names
        from edgec.frameworks.tf_utils import load_keras

        self.model = load_keras(model_file)
        self.names = keras_output_names(self.model)
        self._outputs = [SimpleNamespace(name=n) for n in self.names]

    def get_outputs(self) -> list[Any]:
        return self._outputs

    def run(self, names: list[str] | None, feed: Feeds) -> list[np.ndarray]:
        args = [np.asarray(feed[t.name.split(":")[0]]) for t in self.model.inputs]
        outs = self.model(args, training=False)
        found = dict(zip(self.names, (np.asarray(o) for o in (outs if isinstance(outs, (list, tuple)) else [outs]))))
        return [found[n] for n in names or self.names]


def _session(model_file: Path) -> Any:
    if Path(model_file).suffix.lower() in (".h5", ".hdf5", ".keras"):
        return _KerasSession(Path(model_file))
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 1, 3
    return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])


def _silero_stream(session: Any, audio: np.ndarray) -> Iterator[Feeds]:
    """Silero's streaming feeds: 512-sample chunks after 64 samples of context, the state the model left."""
    state, context = np.zeros((2, 1, 128), np.float32), np.zeros(64, np.float32)
    for start in range(0, len(audio) - 511, 512):
        chunk = np.concatenate([context, audio[start:start + 512]])[None]
        feed = {"input": chunk, "state": state, "sr": np.array(SAMPLE_RATE, np.int64)}
        yield feed
        _, state = session.run(None, feed)
        context = chunk[0, -64:]


def vad_chunks(model_file: Path, count: int, seed: int) -> Feeds:
    """Streaming feeds of silero-vad (``input`` 1x576, ``state`` 2x1x128, ``sr``) taken along speech-like audio."""
    rng, session = np.random.default_rng(seed), _session(model_file)
    feeds = list(_silero_stream(session, speech_like(rng, 512 * count / SAMPLE_RATE * 2)))
    chosen = sorted(rng.choice(len(feeds), size=count, replace=False))
    return {name: np.stack([feeds[i][name] for i in chosen]) for name in ("input", "state", "sr")}


def vad_sequence(model_file: Path, count: int, seed: int) -> Feeds:
    """Feeds of silero-vad's sequence model: 8 chunks of 576 samples with context, and the LSTM state reached."""
    rng, session = np.random.default_rng(seed), _session(model_file)
    audio = speech_like(rng, 8 * 512 * count / SAMPLE_RATE + 0.1)
    h, c, feeds = np.zeros((1, 1, 128), np.float32), np.zeros((1, 1, 128), np.float32), []
    padded = np.concatenate([np.zeros(64, np.float32), audio])
    for i in range(count):
        rows = np.stack([padded[(i * 8 + j) * 512:(i * 8 + j) * 512 + 576] for j in range(8)])
        feeds.append({"input": rows, "h": h, "c": c})
        _, h, c = session.run(None, feeds[-1])
    return {name: np.stack([f[name] for f in feeds]) for name in ("input", "h", "c")}


def _mel_filters(n_fft: int, bands: int) -> np.ndarray:
    """Triangular mel filters (HTK mel scale) over ``n_fft // 2 + 1`` bins, 0-8 kHz."""
    mel = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), bands + 2)
    edges = 700 * (10 ** (mel / 2595) - 1) / SAMPLE_RATE * n_fft
    bins = np.arange(n_fft // 2 + 1)
    rise = (bins[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    fall = (edges[2:, None] - bins[None]) / (edges[2:, None] - edges[1:-1, None])
    return np.maximum(0, np.minimum(rise, fall)).astype(np.float32)


def mel_frames(model_file: Path, count: int, seed: int) -> Feeds:
    """160 frames of 40-band mel power (25 ms windows, 10 ms hop) of speech-like audio: Resemblyzer's ``mels``."""
    rng, filters = np.random.default_rng(seed), _mel_filters(400, 40)
    samples = []
    for _ in range(count):
        audio = speech_like(rng, 1.62)
        frames = np.lib.stride_tricks.sliding_window_view(audio, 400)[::160][:160] * np.hanning(400)
        samples.append((np.abs(np.fft.rfft(frames, axis=1)) ** 2 @ filters.T)[None].astype(np.float32))
    return {"mels": np.stack(samples)}


def pitch_frames(model_file: Path, count: int, seed: int) -> Feeds:
    """1024-sample frames of voiced tones at 50-1000 Hz (log-uniform), normalised as torchcrepe does (``x``)."""
    rng = np.random.default_rng(seed)
    t = np.arange(1024) / SAMPLE_RATE
    frames = []
    for _ in range(count):
        f0 = np.exp(rng.uniform(np.log(50), np.log(1000)))
        wave = sum(rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3)) for k in range(1, 6))
        wave = wave + rng.normal(0, 0.02, t.shape)
        frames.append(((wave - wave.mean()) / max(wave.std(), 1e-10))[None].astype(np.float32))
    return {"x": np.stack(frames)}


# --- file bytes (magika) ------------------------------------------------------------------------------

_SUFFIXES = (".py", ".pyc", ".so", ".json", ".txt", ".md", ".html", ".css", ".js", ".png", ".jpg", ".csv", ".xml",
             ".c", ".h", ".pyi", ".cfg", ".toml", ".yaml", ".ini", ".sh", ".gz", ".zip", ".svg", ".rst", ".pem")


def _installed_files() -> dict[str, list[Path]]:
    """Files of this Python installation by suffix, sorted (deterministic across runs of one install)."""
    roots = {Path(sysconfig.get_paths()[k]) for k in ("stdlib", "purelib")} | {Path(sys.prefix)}
    found: dict[str, list[Path]] = {s: [] for s in _SUFFIXES}
    for root in sorted(roots):
        for folder, _, names in os.walk(root):
            for name in names:
                suffix = Path(name).suffix.lower()
                if suffix in found and len(found[suffix]) < 400:
                    found[suffix].append(Path(folder) / name)
    return {s: sorted(p) for s, p in found.items() if p}


def magika_features(data: bytes, size: int = 1024, pad: int = 256) -> np.ndarray:
    """Magika v3's input: the first and last ``size`` bytes of the first/last 4 KiB, whitespace stripped, padded."""
    begin = list(data[:4096].lstrip()[:size])
    end = list(data[-4096:].rstrip()[-size:])
    return np.array(begin + [pad] * (size - len(begin)) + [pad] * (size - len(end)) + end, np.int32)


def file_bytes(model_file: Path, count: int, seed: int) -> Feeds:
    """Magika features (``bytes``, 1x2048 int32) of real files, suffixes taken in turn."""
    rng, files = np.random.default_rng(seed), _installed_files()
    suffixes = sorted(files)
    samples = []
    for i in range(count):
        group = files[suffixes[i % len(suffixes)]]
        path = group[int(rng.integers(len(group)))]
        with open(path, "rb") as handle:
            head = handle.read(4096)
            handle.seek(max(0, path.stat().st_size - 4096))
            tail = handle.read(4096)
        samples.append(magika_features(head if len(head) < 4096 else head + tail)[None])
    return {"bytes": np.stack(samples)}


# --- classifiers judged on confident inputs, and sentences -----------------------------------------

def _most_confident(samples: np.ndarray, probs: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` samples whose top class FP32 is surest of (softmax rows ``probs``), in their drawn order:
    a classifier's top-1 agreement means little on inputs where FP32 itself hesitates between classes."""
    return samples[np.sort(np.argsort(-probs.max(-1))[:count])]


def photos_224(model_file: Path, count: int, seed: int) -> Feeds:
    """224x224 crops for EfficientNet-Lite0 ((pixel - 127) / 128, input ``x``): the most confident third of
    three times ``count`` crops."""
    import torch

    from edgec.benchmarks.zoo import nets

    rng = np.random.default_rng(seed)
    crops = np.stack([((c - 127.0) / 128.0).transpose(2, 0, 1)[None] for c in _crops(rng, 3 * count, 224, 224)])
    net = nets.efficientnet_lite0()[0]
    with torch.no_grad():
        probs = torch.cat([net(torch.from_numpy(c)).softmax(-1) for c in crops.astype(np.float32)]).numpy()
    return {"x": _most_confident(crops.astype(np.float32), probs, count)}


def _face(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A drawn grey face (head, hair, eyes, brows and a mouth whose shape carries an expression), lit unevenly,
    blurred and noisy, as HxW floats 0-255."""
    from PIL import Image, ImageDraw, ImageFilter

    scale = 4 * size
    image = Image.new("L", (scale, scale), int(rng.integers(20, 200)))
    draw = ImageDraw.Draw(image)
    cx, w, h = scale / 2 + rng.uniform(-12, 12), scale * rng.uniform(0.3, 0.38), scale * rng.uniform(0.4, 0.47)
    draw.ellipse((cx - w, scale / 2 - h, cx + w, scale / 2 + h), fill=int(rng.integers(120, 230)))
    draw.chord((cx - w, scale / 2 - h - 8, cx + w, scale / 2 + h * 0.2), 180, 360, fill=int(rng.integers(10, 90)))
    eye_y, mouth_y, skin = scale * 0.48, scale * 0.7, 40
    mood, brow = int(rng.integers(4)), rng.uniform(-14, 14)
    for side in (-1, 1):
        ex = cx + side * w * 0.45
        draw.ellipse((ex - 14, eye_y - 8 - 6 * (mood == 2), ex + 14, eye_y + 8 + 6 * (mood == 2)), fill=235)
        draw.ellipse((ex - 6, eye_y - 6, ex + 6, eye_y + 6), fill=skin)
        draw.line((ex - 18, eye_y - 24 + side * brow, ex + 18, eye_y - 24 - side * brow), fill=skin, width=6)
    mw, bend = w * rng.uniform(0.35, 0.6), rng.uniform(8, 30)
    if mood == 0:  # smile
        draw.arc((cx - mw, mouth_y - 2 * bend, cx + mw, mouth_y + bend), 20, 160, fill=skin, width=7)
    elif mood == 1:  # frown
        draw.arc((cx - mw, mouth_y, cx + mw, mouth_y + 3 * bend), 200, 340, fill=skin, width=7)
    elif mood == 2:  # open mouth
        draw.ellipse((cx - mw / 2, mouth_y - bend, cx + mw / 2, mouth_y + bend), fill=30)
    else:
        draw.line((cx - mw, mouth_y, cx + mw, mouth_y + rng.uniform(-6, 6)), fill=skin, width=7)
    light = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0), scale)[None]
    face = np.asarray(image.filter(ImageFilter.GaussianBlur(rng.uniform(2, 6))), np.float32) * light
    small = np.asarray(Image.fromarray(face.astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR), np.float32)
    return _noisy(small, rng, 5.0)


def faces_64(model_file: Path, count: int, seed: int) -> Feeds:
    """64x64 grey faces for fer's emotion model (``input_1``, NHWC, (pixel / 255 - 0.5) * 2): the most
    confident third of three times ``count`` drawn faces."""
    rng = np.random.default_rng(seed)
    faces = np.stack([((_face(rng) / 255.0 - 0.5) * 2.0)[None, :, :, None] for _ in range(3 * count)]).astype(np.float32)
    session = _session(model_file)
    probs = np.concatenate([session.run(None, {"input_1": f})[0] for f in faces])
    return {"input_1": _most_confident(faces, probs, count)}


_SUBJECTS = ("The old fisherman", "My sister", "A small black cat", "The new manager", "Our neighbours", "The train")
_ACTIONS = ("walked slowly to", "could not find", "is painting", "left early from", "talked about", "arrived at")
_OBJECTS = ("the harbour", "a quiet cafe", "the train station", "the football match", "the city library", "the market")
_TAILS = ("this morning.", "before the storm.", "after dinner.", "with a smile.", "for the third time.", "yesterday.")
_OTHER = ("Investir em renda fixa é seguro.", "Der Zug nach Berlin fährt um acht Uhr ab.",
          "Le chat dort sur le canapé.", "¿Dónde está la estación de tren?", "Il pleut depuis trois jours.",
          "Ich habe meinen Schlüssel verloren.", "La reunión empieza a las diez.", "O gato preto correu pelo jardim.",
          "How do I reset my password?", "The battery lasts about ten hours.", "Please close the window.",
          "Which restaurant did you like best?")


def _sentence(rng: np.random.Generator) -> str:
    """An English sentence put together from parts, or one of a few written in other languages."""
    if rng.random() < 0.3:
        return str(rng.choice(_OTHER))
    return " ".join(str(rng.choice(part)) for part in (_SUBJECTS, _ACTIONS, _OBJECTS, _TAILS))


def sentences(model_file: Path, count: int, seed: int) -> Feeds:
    """Sentences as USE's SentencePiece ids with bos/eos (``ids``, int64 1x32, zero-padded) and ``mask``."""
    import sentencepiece

    from edgec.benchmarks.zoo import models, nets

    rng = np.random.default_rng(seed)
    vocab = models.fetch(models.USE_VOCAB)
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(vocab))
    ids, mask = np.zeros((count, 1, nets.USE_TOKENS), np.int64), np.zeros((count, 1, nets.USE_TOKENS), np.float32)
    for i in range(count):
        tokens = pieces.encode(_sentence(rng), out_type=int, add_bos=True, add_eos=True)[: nets.USE_TOKENS]
        ids[i, 0, : len(tokens)], mask[i, 0, : len(tokens)] = tokens, 1.0
    return {"ids": ids, "mask": mask}


MAKERS: dict[str, Callable[[Path, int, int], Feeds]] = {
    f.__name__: f for f in (text_lines, text_lines_cls, text_pages, photos_320, photos_pnet, face_crops_48,
                            vad_chunks, vad_sequence, mel_frames, pitch_frames, file_bytes, photos_224, faces_64,
                            sentences)
}
"""The data makers by the name :attr:`edgec.benchmarks.zoo.models.ZooModel.data` gives."""
