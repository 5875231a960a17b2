"""Legacy Keras H5 model files (``.h5`` / ``.hdf5``: what tf.keras 2 wrote, and what most Keras models in the wild
are), checked before Keras opens them.

Rules:
1. The file must be HDF5 holding a ``model_config`` attribute (the JSON model config ``model.save("m.h5")``
   writes; HDF5 attributes are never compressed, so reading it takes at most the file's size). A weights-only
   file (``save_weights``) has none: refused, saying what to give instead.
2. The config is read with h5py (no Keras, no code runs) and walked: a ``Lambda`` layer (a Python function
   marshalled into the file, or one looked up by name) or any ``__lambda__`` function entry is refused before
   anything loads the model, whatever Keras's safe mode would then do.
3. Keras 3 then loads it with ``safe_mode=True`` and ``compile=False`` (its legacy H5 loader honours safe mode,
   so a Lambda that rule 2 missed still fails to load rather than runs), like a ``.keras`` file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgec.core.errors import ExportError, UnsupportedError, require

H5_SUFFIXES = (".h5", ".hdf5")
HINT_LAMBDA = ("where you trust the model, load it with keras.saving.load_model(path, safe_mode=False) and save it "
               "as a SavedModel (model.export('dir')), which holds the traced graph and no Python code")


def is_h5(path: Path) -> bool:
    """Whether ``path`` names a legacy Keras H5 file by its suffix."""
    return path.suffix.lower() in H5_SUFFIXES


def read_model_config(path: Path) -> dict[str, Any]:
    """The model config JSON of a Keras H5 file, read with h5py only (rule 1).

    Raises:
        ExportError: not an HDF5 file, no model config (a weights-only file), or one that is not JSON.
        MissingDependencyError: h5py is not installed.
    """
    h5py = require("h5py", "tflite", "importing Keras H5 models")
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as exc:  # h5py: not HDF5, truncated, or unreadable
        raise ExportError(f"could not read {path} as an HDF5 file ({exc})",
                          hint="give the file written by model.save('model.h5'), or a .keras file") from None
    if raw is None:
        raise ExportError(f"{path} holds no model config (weights only?); expected a whole model saved with "
                          "model.save('model.h5')", hint="load the weights into the model and save the model")
    try:
        config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}'s model config is not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ExportError(f"{path}'s model config is a {type(config).__name__}; expected a JSON object")
    return config


def lambda_layers(config: Any) -> list[str]:
    """Names of the ``Lambda`` layers (and ``__lambda__`` function entries) anywhere in a model config (rule 2)."""
    return list(_lambdas(config))


def _lambdas(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        kind, config = node.get("class_name"), node.get("config")
        if kind in ("Lambda", "__lambda__") or node.get("function_type") == "lambda":
            name = config.get("name") if isinstance(config, dict) else None
            yield str(name or node.get("name") or kind)
            return
        for value in node.values():
            yield from _lambdas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _lambdas(value)


def check_h5(path: Path) -> None:
    """Refuse a Keras H5 file that is not a whole model or holds Lambda layers, without loading it.

    Raises:
        ExportError: see :func:`read_model_config`.
        UnsupportedError: the model has Lambda layers (Python code that loading it would run).
        MissingDependencyError: h5py is not installed.
    """
    found = lambda_layers(read_model_config(path))
    if found:
        names = ", ".join(repr(n) for n in found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise UnsupportedError(f"{path} has Lambda layer{'s' if len(found) > 1 else ''} {names}: Python code stored "
                               "in the file, which edgec never runs", hint=HINT_LAMBDA)
