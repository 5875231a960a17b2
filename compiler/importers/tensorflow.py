"""TensorFlow importer: SavedModel directories and Keras ``.keras`` files, with the FP32 reference run by TF.

Rules:
1. A source is a SavedModel when it is a directory holding ``saved_model.pb``; its interface is the
   ``serving_default`` signature (input and output names are the signature's keys).
2. A source is a Keras model when it is a ``.keras`` file or a legacy Keras ``.h5``/``.hdf5`` file (a whole
   model, as ``model.save("m.h5")`` writes it). It is loaded with ``safe_mode=True`` (a model file must never
   run code on load: ``Lambda`` layers holding pickled bytecode are refused; an H5 file's config is read and
   checked for them before Keras opens it, :mod:`edgec.frameworks.keras_h5`) and ``compile=False``. Input
   names are the Keras input names; output names are the model's output names.
3. Both stay in their own format (``savedmodel`` / ``keras``): no pass converts them; the ``tflite``
   target converts them with TensorFlow's own converter through
   :func:`edgec.frameworks.tf_utils.serving_saved_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgec.compiler.cache import StageCache
from edgec.compiler.importers.base import Feed, Importer, ImportResult
from edgec.core.errors import ConfigError, ExportError, UnsupportedError, brief
from edgec.core.types import ModelArtifact, TensorSpec, sha256_file, sha256_tree
from edgec.frameworks.tf_utils import (
    FORMAT_KERAS,
    FORMAT_SAVEDMODEL,
    SERVING,
    flatten_outputs,
    load_keras,
    tf_module,
)

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def is_saved_model_dir(path: Path) -> bool:
    """Whether ``path`` is a directory holding a SavedModel protobuf."""
    return path.is_dir() and any((path / name).is_file() for name in SAVED_MODEL_FILES)


class TensorflowImporter(Importer):
    """SavedModel directories, ``.keras`` files and legacy Keras ``.h5``/``.hdf5`` files."""

    name = "tensorflow"
    extra = "tflite"
    formats = (FORMAT_SAVEDMODEL, FORMAT_KERAS)

    @classmethod
    def claims(cls, source: str) -> bool:
        return source.lower().endswith(KERAS_SUFFIXES) or is_saved_model_dir(Path(source))

    @classmethod
    def source_name(cls, source: str) -> str:
        path = Path(source)
        return path.stem if path.suffix.lower() in KERAS_SUFFIXES else path.resolve().name

    def load(self, source: str, cache: StageCache, log: Callable[[str], None]) -> ImportResult:
        path = Path(source)
        if path.suffix.lower() in KERAS_SUFFIXES:
            if not path.is_file():
                raise ConfigError(f"model file not found: {source} (expected an existing .keras, .h5 or .hdf5 file)")
            fmt, digest = FORMAT_KERAS, sha256_file(path)
            inputs, outputs = describe_keras(load_keras(path))
        else:
            fmt, digest = FORMAT_SAVEDMODEL, sha256_tree(path)
            inputs, outputs = describe_signature(serving_signature(path))
        log(f"loaded {fmt} model with inputs {[s.name for s in inputs]} and outputs {[s.name for s in outputs]}")
        artifact = ModelArtifact(path, fmt, inputs, outputs, digest)
        return ImportResult(artifact, self.source_name(source), fmt, digest)

    def reference(self, artifact: ModelArtifact, feeds: list[Feed]) -> list[Feed]:
        tf = tf_module()
        if artifact.format == FORMAT_KERAS:
            model = load_keras(artifact.path)
            names = [s.name for s in artifact.outputs]
            outs = [flatten_outputs(model(_keras_args(tf, feed, artifact), training=False)) for feed in feeds]
            return [{n: np.asarray(o) for n, o in zip(names, out, strict=True)} for out in outs]
        signature = serving_signature(artifact.path)
        return [{k: v.numpy() for k, v in signature(**{n: tf.constant(a) for n, a in feed.items()}).items()} for feed in feeds]


def serving_signature(path: Path) -> Any:
    """The ``serving_default`` concrete function of a SavedModel.

    Raises:
        ExportError: the directory is not a loadable SavedModel.
        UnsupportedError: it has no ``serving_default`` signature.
    """
    tf = tf_module()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # one TensorFlow call on the user's directory: it raises many types for a bad one
        raise ExportError(f"could not load {path} as a TensorFlow SavedModel: {brief(exc)}") from exc
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


def _keras_args(tf: Any, feed: Feed, artifact: ModelArtifact) -> Any:
    args = [tf.constant(feed[s.name]) for s in artifact.inputs]
    return args if len(args) > 1 else args[0]


def _spec(name: str, tensor: Any) -> TensorSpec:
    dims = list(tensor.shape)
    shape = tuple(int(d) if d is not None else ("batch" if i == 0 else None) for i, d in enumerate(dims))
    dtype = tensor.dtype
    dtype_name = dtype if isinstance(dtype, str) else dtype.name
    return TensorSpec(str(name).split(":")[0], shape, str(np.dtype(dtype_name)))
