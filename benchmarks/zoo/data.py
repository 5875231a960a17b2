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


def _session(model_file: Path) -> Any:
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


MAKERS: dict[str, Callable[[Path, int, int], Feeds]] = {
    f.__name__: f for f in (text_lines, text_lines_cls, text_pages, photos_320, photos_pnet, face_crops_48,
                            vad_chunks, vad_sequence, mel_frames, pitch_frames, file_bytes)
}
"""The data makers by the name :attr:`edgec.benchmarks.zoo.models.ZooModel.data` gives."""
