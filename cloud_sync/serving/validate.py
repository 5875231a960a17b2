"""Request decoding and validation against the bundle's tensor specs: a precise 4xx, never a crash."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgec.core.types import TensorSpec

from .arrays import MAX_DIMS, MB, BadRequest, check_dtype, check_shape, read_npy, read_npz

JSON = "application/json"
NPZ = "application/x-npz"
NPY = "application/x-npy"

__all__ = ["JSON", "NPY", "NPZ", "BadRequest", "DecodeLimits", "decode", "encode", "validate"]


@dataclass(frozen=True)
class DecodeLimits:
    """What one request body may decode to: samples per input and bytes of arrays in all."""

    max_batch: int = 256
    max_bytes: int = 64 * 1024 * 1024


def decode(body: bytes, content_type: str, specs: tuple[TensorSpec, ...], limits: DecodeLimits = DecodeLimits()) -> dict[str, np.ndarray]:
    """Arrays by input name from a JSON (``{"inputs": {name: nested lists}}``), ``.npz`` or ``.npy`` body.

    Binary bodies are untrusted: see :mod:`.arrays` for the order of checks that keeps a zip bomb or
    a lying header from allocating or inflating more than ``limits`` allows.

    Raises:
        BadRequest: 400 for undecodable bodies, 413 past ``limits``, 415 for other content types or
            compressions, 422 for arrays the model cannot take (names, dtypes, shapes).
    """
    kind = media_type(content_type)
    if kind in ("", JSON):
        return _decode_json(body, limits)
    if kind == NPZ:
        return read_npz(body, specs, limits)
    if kind == NPY:
        if len(specs) != 1:
            raise BadRequest(415, "npy_multi_input", f"the model has {len(specs)} inputs; send application/x-npz with one array per input")
        return {specs[0].name: read_npy(body, specs[0], limits)}
    raise BadRequest(415, "content_type", f"unsupported content type {kind!r}; send {JSON}, {NPZ} or {NPY}")


def media_type(content_type: str) -> str:
    """``application/x-npy; q=1`` -> ``application/x-npy``."""
    return content_type.split(";")[0].strip().lower()


def _decode_json(body: bytes, limits: DecodeLimits) -> dict[str, np.ndarray]:
    expected = 'expected a JSON object {"inputs": {NAME: nested lists of numbers}}'
    try:
        payload = json.loads(body)
    except RecursionError:
        raise BadRequest(400, "bad_json", f"JSON nested too deeply; inputs are arrays of at most {MAX_DIMS} dims") from None
    except ValueError:
        raise BadRequest(400, "bad_json", expected) from None
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(inputs, dict):
        raise BadRequest(400, "bad_json", expected)
    arrays = {str(k): _json_array(str(k), v) for k, v in inputs.items()}
    total = sum(a.nbytes for a in arrays.values())
    if total > limits.max_bytes:
        raise BadRequest(413, "decoded_too_large", f"inputs decode to {total} bytes, over the limit of {limits.max_bytes / MB:g} MB (--max-decoded-mb)")
    return arrays


def _json_array(name: str, value: Any) -> np.ndarray:
    depth, probe = 0, value
    while isinstance(probe, list) and probe:
        depth, probe = depth + 1, probe[0]
    if depth > MAX_DIMS:
        raise BadRequest(422, "shape", f"input {name!r} is nested {depth} lists deep; arrays have at most {MAX_DIMS} dims")
    try:
        arr = np.asarray(value)
    except (ValueError, OverflowError, TypeError):
        raise BadRequest(422, "ragged", f"input {name!r} is a ragged list; expected a rectangular array") from None
    if arr.dtype.kind not in "biuf":
        raise BadRequest(422, "dtype", f"input {name!r} must hold numbers, got {arr.dtype.kind!r} values")
    return arr


def validate(arrays: dict[str, np.ndarray], specs: tuple[TensorSpec, ...], max_batch: int) -> dict[str, np.ndarray]:
    """Check names, dtypes and shapes; add a missing batch axis; cast to the spec dtype.

    Raises:
        BadRequest: 422 naming the input and what was expected; 413 for a batch over ``max_batch``.
    """
    expected = [s.name for s in specs]
    unknown = sorted(set(arrays) - set(expected))
    missing = [n for n in expected if n not in arrays]
    if unknown or missing:
        raise BadRequest(422, "names", f"inputs must be exactly {expected}; missing {missing}, unknown {unknown}")
    feed = {spec.name: _check(arrays[spec.name], spec) for spec in specs}
    sizes = sorted({len(a) for a in feed.values()})
    if len(sizes) > 1:
        raise BadRequest(422, "batch", f"inputs disagree on the batch size: {sizes}")
    if sizes[0] == 0:
        raise BadRequest(422, "batch", "the batch is empty; send at least one sample")
    if sizes[0] > max_batch:
        raise BadRequest(413, "batch_too_large", f"batch of {sizes[0]} exceeds the server's limit of {max_batch}")
    return feed


def _check(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    want = np.dtype(spec.dtype)
    check_dtype(arr.dtype, spec, f"input {spec.name!r}")
    if arr.dtype.kind == "f" and want.kind in "iub":
        raise BadRequest(422, "dtype", f"input {spec.name!r} expects {want} values, got floats")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise BadRequest(422, "nonfinite", f"input {spec.name!r} holds NaN or inf")
    shape = tuple(int(d) for d in arr.shape)
    if not spec.accepts_shape(shape):
        check_shape(shape, spec)
        arr = arr[None]
    return np.ascontiguousarray(arr.astype(want, copy=False))


def encode(outputs: dict[str, np.ndarray], kind: str) -> tuple[bytes, str]:
    """Response body in the request's format.

    JSON for JSON; ``.npy`` for an ``.npy`` request to a single-output model; ``.npz`` for an ``.npz``
    request, and for an ``.npy`` request to a model with several outputs (an ``.npy`` holds one array;
    the content type says which came back).
    """
    if kind == NPY and len(outputs) == 1:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(next(iter(outputs.values()))), allow_pickle=False)
        return buffer.getvalue(), NPY
    if kind in (NPZ, NPY):
        buffer = io.BytesIO()
        np.savez(buffer, **outputs)  # type: ignore[arg-type]
        return buffer.getvalue(), NPZ
    return json.dumps({"outputs": {k: np.asarray(v).tolist() for k, v in outputs.items()}}).encode(), JSON
