"""TensorFlow importer: SavedModel directories and Keras ``.keras`` files, with the FP32 reference run by TF.

Rules:
1. A source is a SavedModel when it is a directory holding ``saved_model.pb``; its interface is the
   ``serving_default`` signature (input and output names are the signature's keys).
2. A source is a Keras model when it is a ``.keras`` file. It is loaded with ``safe_mode=True`` (a model
   file must never run code on load: ``Lambda`` layers holding pickled bytecode are refused) and
   ``compile=False``. Input names are the Keras input names; output names are the model's output names.
3. Both stay in their own format (``savedmodel`` / ``keras``): no pass converts them; the ``tflite``
   target converts them with TensorFlow's own converter through :func:`serving_saved_model`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgec.compiler.cache import StageCache
from edgec.compiler.importers.base import Feed, Importer, ImportResult
from edgec.core.errors import ConfigError, ExportError, UnsupportedError, require
from edgec.core.types import ModelArtifact, TensorSpec, sha256_file, sha256_tree

FORMAT_SAVEDMODEL = "savedmodel"
FORMAT_KERAS = "keras"
SERVING = "serving_default"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def tf_module() -> Any:
    """``tensorflow``, or :class:`MissingDependencyError` naming the ``tflite`` extra.

    The first import runs with the process's stdout/stderr file descriptors sent to a scratch file:
    TensorFlow's native libraries print banners (oneDNN, absl) that ``TF_CPP_MIN_LOG_LEVEL`` does not
    silence, and the CLI's contract is one line on stderr.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with tempfile.TemporaryDirectory(prefix="edgec-tf-") as tmp, native_output_to(Path(tmp) / "import.log"):
        return require("tensorflow", "tflite", "importing TensorFlow models")


@contextlib.contextmanager
def native_output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout/stderr file descriptors (native libraries' logging included) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "w") as log:
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def is_saved_model_dir(path: Path) -> bool:
    """Whether ``path`` is a directory holding a SavedModel protobuf."""
    return path.is_dir() and any((path / name).is_file() for name in SAVED_MODEL_FILES)


class TensorflowImporter(Importer):
    """SavedModel directories and ``.keras`` files."""

    name = "tensorflow"
    extra = "tflite"
    formats = (FORMAT_SAVEDMODEL, FORMAT_KERAS)

    @classmethod
    def claims(cls, source: str) -> bool:
        return source.lower().endswith(".keras") or is_saved_model_dir(Path(source))

    def load(self, source: str, cache: StageCache, log: Callable[[str], None]) -> ImportResult:
        path = Path(source)
        if path.suffix.lower() == ".keras":
            if not path.is_file():
                raise ConfigError(f"model file not found: {source} (expected an existing .keras file)")
            fmt, digest = FORMAT_KERAS, sha256_file(path)
            inputs, outputs = describe_keras(load_keras(path))
        else:
            fmt, digest = FORMAT_SAVEDMODEL, sha256_tree(path)
            inputs, outputs = describe_signature(serving_signature(path))
        log(f"loaded {fmt} model with inputs {[s.name for s in inputs]} and outputs {[s.name for s in outputs]}")
        artifact = ModelArtifact(path, fmt, inputs, outputs, digest)
        name = path.stem if fmt == FORMAT_KERAS else path.resolve().name
        return ImportResult(artifact, name, fmt, digest)

    def reference(self, artifact: ModelArtifact, feeds: list[Feed]) -> list[Feed]:
        tf = tf_module()
        if artifact.format == FORMAT_KERAS:
            model = load_keras(artifact.path)
            names = [s.name for s in artifact.outputs]
            outs = [_flatten(model(_keras_args(tf, feed, artifact), training=False)) for feed in feeds]
            return [{n: np.asarray(o) for n, o in zip(names, out, strict=True)} for out in outs]
        signature = serving_signature(artifact.path)
        return [{k: v.numpy() for k, v in signature(**{n: tf.constant(a) for n, a in feed.items()}).items()} for feed in feeds]


def load_keras(path: Path) -> Any:
    """Load a ``.keras`` file safely (no code from the file runs).

    Raises:
        ExportError: the file is not a loadable Keras model, or needs unsafe deserialization.
    """
    tf_module()
    keras = require("keras", "tflite", "importing Keras models")
    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:
        raise ExportError(f"could not load {path} as a Keras model: {_short(exc)}",
                          hint="save it with model.save('model.keras'); Lambda layers are refused (safe mode)") from exc


def serving_signature(path: Path) -> Any:
    """The ``serving_default`` concrete function of a SavedModel.

    Raises:
        ExportError: the directory is not a loadable SavedModel.
        UnsupportedError: it has no ``serving_default`` signature.
    """
    tf = tf_module()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ExportError(f"could not load {path} as a TensorFlow SavedModel: {_short(exc)}") from exc
    if SERVING not in loaded.signatures:
        raise UnsupportedError(
            f"SavedModel {path} has no '{SERVING}' signature (it has {sorted(loaded.signatures) or 'none'})",
            hint="save it with tf.saved_model.save(module, path, signatures={'serving_default': fn})",
        )
    signature = loaded.signatures[SERVING]
    signature._edgec_keepalive = loaded  # the function needs its object graph alive
    return signature


def describe_signature(signature: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Input and output specs of a signature, named by its keys (inputs in signature order)."""
    _, kwargs = signature.structured_input_signature
    inputs = tuple(_spec(name, spec) for name, spec in kwargs.items())
    outputs = tuple(_spec(name, spec) for name, spec in signature.structured_outputs.items())
    return inputs, outputs


def describe_keras(model: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Input and output specs of a Keras model."""
    inputs = tuple(_spec(t.name, t) for t in model.inputs)
    names = keras_output_names(model)
    return inputs, tuple(_spec(n, t) for n, t in zip(names, model.outputs, strict=True))


def keras_output_names(model: Any) -> list[str]:
    """The model's output names, or ``output_0``, ``output_1``... when it has none."""
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(model.outputs) or len(set(names)) != len(names):
        names = [f"output_{i}" for i in range(len(model.outputs))]
    return names


def serving_saved_model(artifact: ModelArtifact, out_dir: Path) -> Path:
    """A SavedModel whose ``serving_default`` takes and returns the artifact's named tensors.

    A SavedModel source is used as it is. A Keras model is written with Keras's ``ExportArchive``
    (which tracks Keras 3 variables so that converters can freeze them; a plain ``tf.Module`` wrapper
    leaves them as resource variables that TFLite cannot read), through a function whose inputs and
    outputs carry the names of ``artifact.inputs`` / ``artifact.outputs``.
    """
    if artifact.format == FORMAT_SAVEDMODEL:
        return artifact.path
    tf = tf_module()
    keras = require("keras", "tflite", "exporting Keras models")
    model = load_keras(artifact.path)
    specs = [tf.TensorSpec(_tf_shape(s), tf.as_dtype(s.dtype), name=s.name) for s in artifact.inputs]
    names = [s.name for s in artifact.outputs]

    def serve(*args: Any) -> dict[str, Any]:
        outs = model(list(args) if len(args) > 1 else args[0], training=False)
        return dict(zip(names, _flatten(outs), strict=True))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SERVING, fn=serve, input_signature=specs)
    archive.write_out(str(out_dir), verbose=False)
    return out_dir


def _keras_args(tf: Any, feed: Feed, artifact: ModelArtifact) -> Any:
    args = [tf.constant(feed[s.name]) for s in artifact.inputs]
    return args if len(args) > 1 else args[0]


def _flatten(outs: Any) -> list[Any]:
    if isinstance(outs, dict):
        outs = list(outs.values())
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


def _spec(name: str, tensor: Any) -> TensorSpec:
    dims = list(tensor.shape)
    shape = tuple(int(d) if d is not None else ("batch" if i == 0 else None) for i, d in enumerate(dims))
    dtype = tensor.dtype
    dtype_name = dtype if isinstance(dtype, str) else dtype.name
    return TensorSpec(str(name).split(":")[0], shape, str(np.dtype(dtype_name)))


def _tf_shape(spec: TensorSpec) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in spec.shape]


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")
