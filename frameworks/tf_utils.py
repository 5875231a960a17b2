"""TensorFlow helpers shared by the TensorFlow importer and the targets that convert TF models (tflite, coreml).

``tf_module`` imports TensorFlow quietly; ``serving_saved_model`` gives a SavedModel whose
``serving_default`` signature takes and returns a model's named tensors (Keras models are exported to one);
``native_output_to`` sends native libraries' logging to a file. ``tensorflow`` and ``keras`` are imported
inside functions only.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgec.core.errors import ExportError, brief, require
from edgec.core.types import ModelArtifact, TensorSpec

FORMAT_SAVEDMODEL = "savedmodel"
FORMAT_KERAS = "keras"
SERVING = "serving_default"


def tf_module() -> Any:
    """``tensorflow``, or :class:`MissingDependencyError` naming the ``tflite`` extra.

    The first import runs with the process's stdout/stderr file descriptors sent to a scratch file:
    TensorFlow's native libraries print banners (oneDNN, absl) that ``TF_CPP_MIN_LOG_LEVEL`` does not
    silence, and the CLI's contract is one line on stderr.

    Raises:
        MissingDependencyError: tensorflow is not installed.
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


def load_keras(path: Path) -> Any:
    """Load a ``.keras`` or legacy ``.h5``/``.hdf5`` Keras file safely (no code from the file runs; an H5 file's
    config is checked before Keras opens it: :mod:`edgec.frameworks.keras_h5`).

    Raises:
        ExportError: the file is not a loadable Keras model, or needs unsafe deserialization.
        UnsupportedError: an H5 model with Lambda layers.
        MissingDependencyError: tensorflow or keras is not installed.
    """
    from edgec.frameworks.keras_h5 import check_h5, is_h5

    if is_h5(path):
        check_h5(path)
    tf_module()
    keras = require("keras", "tflite", "importing Keras models")
    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:  # one Keras call on the user's file: it raises many types for a bad or unsafe one
        raise ExportError(f"could not load {path} as a Keras model: {brief(exc)}",
                          hint="save it with model.save('model.keras'); Lambda layers are refused (safe mode)") from exc


def serving_saved_model(artifact: ModelArtifact, out_dir: Path) -> Path:
    """A SavedModel whose ``serving_default`` takes and returns the artifact's named tensors.

    A SavedModel source is used as it is. A Keras model is written with Keras's ``ExportArchive``
    (which tracks Keras 3 variables so that converters can freeze them; a plain ``tf.Module`` wrapper
    leaves them as resource variables that TFLite cannot read), through a function whose inputs and
    outputs carry the names of ``artifact.inputs`` / ``artifact.outputs``.

    Raises:
        ExportError: the Keras model cannot be loaded.
        MissingDependencyError: tensorflow or keras is not installed.
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
        return dict(zip(names, flatten_outputs(outs), strict=True))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SERVING, fn=serve, input_signature=specs)
    archive.write_out(str(out_dir), verbose=False)
    return out_dir


def flatten_outputs(outs: Any) -> list[Any]:
    """A Keras model's outputs (one tensor, a list/tuple or a dict) as a list, in order."""
    if isinstance(outs, dict):
        outs = list(outs.values())
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


def _tf_shape(spec: TensorSpec) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in spec.shape]
