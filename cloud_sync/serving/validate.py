"""Request decoding and validation against the bundle's tensor specs: a precise 4xx, never a crash."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from edgec.compiler.types import TensorSpec

JSON = "application/json"
NPZ = "application/x-npz"
NPY = "application/x-npy"


class BadRequest(Exception):
    """A request the server rejects, with its HTTP status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def decode(body: bytes, content_type: str, specs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """Arrays by input name from a JSON (``{"inputs": {name: nested lists}}``), ``.npz`` or ``.npy`` body.

    Raises:
        BadRequest: 400 for undecodable bodies, 415 for other content types.
    """
    kind = content_type.split(";")[0].strip().lower()
    if kind in ("", JSON):
        try:
            payload = json.loads(body)
            inputs = payload["inputs"]
            assert isinstance(inputs, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise BadRequest(400, "bad_json", 'expected a JSON object {"inputs": {NAME: nested lists of numbers}}') from None
        return {str(k): _json_array(str(k), v) for k, v in inputs.items()}
    if kind == NPZ:
        try:
            with np.load(io.BytesIO(body), allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError):
            raise BadRequest(400, "bad_npz", "body is not a readable .npz archive of input arrays") from None
    if kind == NPY:
        if len(specs) != 1:
            raise BadRequest(415, "npy_multi_input", f"the model has {len(specs)} inputs; send application/x-npz with one array per input")
        try:
            return {specs[0].name: np.load(io.BytesIO(body), allow_pickle=False)}
        except (ValueError, OSError, EOFError):
            raise BadRequest(400, "bad_npy", "body is not a readable .npy array") from None
    raise BadRequest(415, "content_type", f"unsupported content type {kind!r}; send {JSON}, {NPZ} or {NPY}")


def _json_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError:
        raise BadRequest(422, "ragged", f"input {name!r} is a ragged list; expected a rectangular array") from None
    if arr.dtype.kind not in "biuf":
        raise BadRequest(422, "dtype", f"input {name!r} must hold numbers, got {arr.dtype.kind!r} values")
    return arr


def validate(arrays: dict[str, np.ndarray], specs: tuple[TensorSpec, ...], max_batch: int) -> dict[str, np.ndarray]:
    """Check names, dtypes and shapes; add a missing batch axis; cast to the spec dtype.

    Raises:
        BadRequest: 422 naming the input and what was expected.
    """
    expected = [s.name for s in specs]
    unknown = sorted(set(arrays) - set(expected))
    missing = [n for n in expected if n not in arrays]
    if unknown or missing:
        raise BadRequest(422, "names", f"inputs must be exactly {expected}; missing {missing}, unknown {unknown}")
    feed = {spec.name: _check(arrays[spec.name], spec) for spec in specs}
    sizes = {len(a) for a in feed.values()}
    if len(sizes) > 1:
        raise BadRequest(422, "batch", f"inputs disagree on the batch size: {sorted(sizes)}")
    if sizes.pop() > max_batch:
        raise BadRequest(413, "batch_too_large", f"batch of {len(next(iter(feed.values())))} exceeds the server's limit of {max_batch}")
    return feed


def _check(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if arr.dtype.kind == "f" and want.kind in "iub":
        raise BadRequest(422, "dtype", f"input {spec.name!r} expects {want} values, got floats")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise BadRequest(422, "nonfinite", f"input {spec.name!r} holds NaN or inf")
    shape = tuple(int(d) for d in arr.shape)
    if not spec.accepts_shape(shape):
        if spec.accepts_shape((1, *shape)):
            arr = arr[None]
        else:
            dims = ", ".join("?" if d is None else str(d) for d in spec.shape)
            raise BadRequest(422, "shape", f"input {spec.name!r} has shape {list(shape)}; expected ({dims})")
    return np.ascontiguousarray(arr.astype(want, copy=False))


def encode(outputs: dict[str, np.ndarray], kind: str) -> tuple[bytes, str]:
    """Response body in the request's format (JSON, or .npz for binary requests)."""
    if kind in (NPZ, NPY):
        buffer = io.BytesIO()
        np.savez(buffer, **outputs)  # type: ignore[arg-type]
        return buffer.getvalue(), NPZ
    return json.dumps({"outputs": {k: np.asarray(v).tolist() for k, v in outputs.items()}}).encode(), JSON
