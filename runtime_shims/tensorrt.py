"""TensorRT runner: loads a bundle's engine, or builds one from the bundle's ONNX and settings, and runs it.

TensorRT engines are specific to a GPU model and a TensorRT version, so a bundle carries a TensorRT-ready
ONNX plus ``tensorrt.json`` (optimization profiles, precision) and, only when it was built on a GPU, an
engine (``model.plan``) tagged with the GPU and TensorRT version it was built with. The runner uses that
engine only when the caller trusts the bundle (``trust_engine=True``) and it matches this GPU and TensorRT
version: deserializing an engine is running native code (an engine may embed plugin code), and a bundle
is untrusted input unless its origin was verified. Otherwise it builds an engine from the bundle's ONNX
(with a timing cache) and keeps it in its own cache directory, so the build happens once per GPU,
TensorRT version and model.

Device memory goes through the CUDA driver library (``libcuda``, part of every NVIDIA driver) via
``ctypes``: no pycuda, cuda-python or torch is needed, only ``numpy`` and ``tensorrt``.

:func:`open_runner` picks this runner when TensorRT and a GPU are there, and otherwise an onnxruntime
runner over the same ONNX, so a bundle can still be checked on a host without a GPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import bundle_files
from .base import Runner, RunnerError
from .ort import OrtRunner

TARGETS = ("tensorrt",)
"""Targets whose bundles this module runs (see :mod:`.runners`)."""

SETTINGS_FILE = "tensorrt.json"
ENGINE_FILE = "model.plan"
CC_MAJOR_ATTR = 75
"""CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR; the minor one is 76."""


class CudaError(RunnerError):
    """A CUDA driver call failed or no NVIDIA GPU is usable."""


class CudaDriver:
    """The few CUDA driver API calls the runner needs, through ctypes (``libcuda.so.1``/``nvcuda.dll``).

    Args:
        device: GPU ordinal.

    Raises:
        CudaError: no driver library, no GPU, or a failing call.
    """

    def __init__(self, device: int = 0) -> None:
        self.lib = _load_libcuda()
        self._call("cuInit", ctypes.c_uint(0))
        count = ctypes.c_int()
        self._call("cuDeviceGetCount", ctypes.byref(count))
        if device >= count.value:
            raise CudaError(f"CUDA device {device} does not exist ({count.value} found)")
        handle = ctypes.c_int()
        self._call("cuDeviceGet", ctypes.byref(handle), ctypes.c_int(device))
        self.device = handle

    def _call(self, name: str, *args: Any) -> None:
        result = getattr(self.lib, name)(*args)
        if result != 0:
            text = ctypes.c_char_p()
            self.lib.cuGetErrorName(result, ctypes.byref(text))
            raise CudaError(f"{name} failed: {(text.value or b'?').decode()} ({result})")

    def info(self) -> dict[str, Any]:
        """GPU name, compute capability (``"9.0"``), memory and driver version."""
        name = ctypes.create_string_buffer(256)
        self._call("cuDeviceGetName", name, ctypes.c_int(256), self.device)
        major, minor, driver = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        self._call("cuDeviceGetAttribute", ctypes.byref(major), ctypes.c_int(CC_MAJOR_ATTR), self.device)
        self._call("cuDeviceGetAttribute", ctypes.byref(minor), ctypes.c_int(CC_MAJOR_ATTR + 1), self.device)
        self._call("cuDriverGetVersion", ctypes.byref(driver))
        total = ctypes.c_size_t()
        self._call("cuDeviceTotalMem_v2", ctypes.byref(total), self.device)
        return {"name": name.value.decode(), "compute_capability": f"{major.value}.{minor.value}",
                "memory_mib": total.value >> 20, "cuda_driver": f"{driver.value // 1000}.{driver.value % 1000 // 10}"}

    def push_primary_context(self) -> None:
        """Make the device's primary context (the one the CUDA runtime and TensorRT use) current."""
        ctx = ctypes.c_void_p()
        self._call("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), self.device)
        self._call("cuCtxPushCurrent_v2", ctx)

    def pop_primary_context(self) -> None:
        """Undo :meth:`push_primary_context`."""
        ctx = ctypes.c_void_p()
        self._call("cuCtxPopCurrent_v2", ctypes.byref(ctx))
        self._call("cuDevicePrimaryCtxRelease_v2", self.device)

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_uint64()
        self._call("cuMemAlloc_v2", ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1)))
        return int(ptr.value)

    def free(self, ptr: int) -> None:
        self._call("cuMemFree_v2", ctypes.c_uint64(ptr))

    def stream(self) -> int:
        handle = ctypes.c_void_p()
        self._call("cuStreamCreate", ctypes.byref(handle), ctypes.c_uint(1))  # CU_STREAM_NON_BLOCKING
        return int(handle.value or 0)

    def destroy_stream(self, stream: int) -> None:
        self._call("cuStreamDestroy_v2", ctypes.c_void_p(stream))

    def to_device(self, ptr: int, array: np.ndarray, stream: int) -> None:
        """Copy a C-contiguous array to device memory (ordered on ``stream``; keep ``array`` alive until sync)."""
        self._call("cuMemcpyHtoDAsync_v2", ctypes.c_uint64(ptr), ctypes.c_void_p(array.ctypes.data),
                   ctypes.c_size_t(array.nbytes), ctypes.c_void_p(stream))

    def to_host(self, array: np.ndarray, ptr: int, stream: int) -> None:
        """Copy device memory into a C-contiguous array (ordered on ``stream``)."""
        self._call("cuMemcpyDtoHAsync_v2", ctypes.c_void_p(array.ctypes.data), ctypes.c_uint64(ptr),
                   ctypes.c_size_t(array.nbytes), ctypes.c_void_p(stream))

    def sync(self, stream: int) -> None:
        self._call("cuStreamSynchronize", ctypes.c_void_p(stream))


def _load_libcuda() -> Any:
    names = ["libcuda.so.1", "libcuda.so", "nvcuda.dll"]
    found = ctypes.util.find_library("cuda")
    for name in ([found] if found else []) + names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise CudaError("no NVIDIA driver: libcuda could not be loaded")


def gpu_info(device: int = 0) -> dict[str, Any] | None:
    """The GPU's name, compute capability, memory and driver version; None when no NVIDIA GPU is usable."""
    try:
        return CudaDriver(device).info()
    except CudaError:
        return None


def has_tensorrt() -> bool:
    """Whether the tensorrt package is installed (without importing it)."""
    try:
        return importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):
        return False


def tensorrt_version() -> str | None:
    """The installed TensorRT's version, or None (imports tensorrt, which loads its libraries)."""
    if not has_tensorrt():
        return None
    import tensorrt as trt

    return str(trt.__version__)


def _engine_path(bundle: Path, name: object) -> str | None:
    """The bundle's engine file: a plain name inside the bundle, no symlink (None when it is not there).

    Raises:
        BundleFileError: the settings name a path outside the bundle or a symlink.
    """
    checked = bundle_files.plain_name(name, f"{SETTINGS_FILE} engine file")
    return bundle_files.regular_file(str(bundle), checked) if os.path.lexists(bundle / checked) else None


def engine_unavailable_reason(device: int = 0) -> str | None:
    """Why TensorRT engines cannot be built or run here, or None when they can."""
    if not has_tensorrt():
        return "the tensorrt Python package is not installed"
    try:
        CudaDriver(device)
    except CudaError as exc:
        return f"no usable NVIDIA GPU ({exc})"
    return None


def load_settings(bundle_dir: str | Path) -> dict[str, Any]:
    """The bundle's TensorRT build settings (``tensorrt.json``).

    Raises:
        RunnerError: the file is missing or not JSON.
    """
    path = Path(bundle_dir) / SETTINGS_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise RunnerError(f"cannot read TensorRT settings {path}: {exc}") from exc


def cache_dir() -> Path:
    """Where engines built on this device and timing caches are kept."""
    base = os.environ.get("EDGEC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "edgec")
    return Path(base) / "tensorrt"


def _make_logger(trt: Any, lines: list[str]) -> Any:
    """A TensorRT logger that keeps warnings and errors (for error messages and build logs)."""

    class Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                lines.append(f"[{str(severity).rsplit('.', 1)[-1]}] {msg}")

    return Logger()


def _import_trt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RunnerError("tensorrt is not installed (pip install tensorrt, on a machine with an NVIDIA GPU)") from exc
    return trt


def _network(trt: Any, builder: Any) -> tuple[Any, bool]:
    """A network definition, strongly typed where TensorRT offers it (10.x; always so in 11.x)."""
    flags = 0
    strong = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    if strong:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return builder.create_network(flags), strong


def _configure(trt: Any, builder: Any, config: Any, settings: dict[str, Any], strong: bool) -> None:
    """Precision flags (weakly typed TensorRT 8.x only) and the optimization profile."""
    if not strong:
        for key, flag in (("fp16", "FP16"), ("int8", "INT8")):
            if settings.get(key) and hasattr(trt.BuilderFlag, flag):
                config.set_flag(getattr(trt.BuilderFlag, flag))
    profiles = settings.get("profiles") or {}
    if profiles:
        profile = builder.create_optimization_profile()
        for name, dims in profiles.items():
            profile.set_shape(name, tuple(dims["min"]), tuple(dims["opt"]), tuple(dims["max"]))
        config.add_optimization_profile(profile)


def build_engine(onnx_path: str | Path, settings: dict[str, Any], timing_cache: str | Path | None = None,
                 log: list[str] | None = None) -> bytes:
    """Build a serialized engine from an ONNX file and the bundle's settings.

    Args:
        onnx_path: the TensorRT-ready ONNX (fp32, fp16 with fp32 I/O, or int8 Q/DQ).
        settings: ``tensorrt.json``'s content: ``profiles`` ({input: {min, opt, max}}), ``fp16``, ``int8``.
        timing_cache: file read before and written after the build (layer timings on this GPU).
        log: receives TensorRT's warnings and errors.

    Raises:
        RunnerError: tensorrt missing, the parser rejected the model, or the build failed.
    """
    trt = _import_trt()
    lines = log if log is not None else []
    logger = _make_logger(trt, lines)
    builder = trt.Builder(logger)
    network, strong = _network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        lines.extend(errors)
        raise RunnerError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors[0] if errors else 'no detail'}")
    config = builder.create_builder_config()
    _configure(trt, builder, config, settings, strong)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RunnerError(f"TensorRT could not build an engine from {onnx_path}: {lines[-1] if lines else 'no detail'}")
    if cache_path:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(memoryview(cache.serialize())))
    return bytes(memoryview(plan))


def engine_key(onnx_path: str | Path, settings: dict[str, Any], gpu: dict[str, Any], version: str) -> str:
    """Cache key of an engine: ONNX bytes, build settings, GPU model and compute capability, TensorRT version."""
    digest = hashlib.sha256(Path(onnx_path).read_bytes())
    build = {k: settings.get(k) for k in ("profiles", "fp16", "int8")}
    digest.update(json.dumps([build, gpu["name"], gpu["compute_capability"], version], sort_keys=True).encode())
    return digest.hexdigest()[:32]


def timing_cache_path(gpu: dict[str, Any], version: str, root: Path | None = None) -> Path:
    """One timing cache per GPU model and TensorRT version."""
    slug = "".join(c if c.isalnum() else "-" for c in gpu["name"]).strip("-").lower()
    return (root or cache_dir()) / f"timing-{slug}-sm{gpu['compute_capability']}-trt{version}.cache"


def bundle_engine_matches(settings: dict[str, Any], gpu: dict[str, Any], version: str) -> bool:
    """Whether the bundle's engine was built on this GPU model with this TensorRT version."""
    built = settings.get("engine") or {}
    return (built.get("gpu") == gpu["name"] and built.get("compute_capability") == gpu["compute_capability"]
            and built.get("tensorrt") == version)


class TensorRTRunner(Runner):
    """Runs a TensorRT engine on one GPU.

    Args:
        model_path: the bundle's ONNX file (built into an engine when no matching engine is given).
        threads: unused (kept for the runner interface).
        settings: the bundle's ``tensorrt.json`` content.
        engine_path: a prebuilt engine; used when ``trust_engine`` and ``settings["engine"]`` names this GPU
            and TensorRT version.
        engine_cache: where engines built here are kept; default :func:`cache_dir`.
        device: GPU ordinal.
        trust_engine: the bundle comes from a source the caller verified (a signed release, the user's own
            build): its engine may be deserialized. False builds the engine from the ONNX instead.
    """

    runtime = "tensorrt"

    def __init__(self, model_path: str, threads: int | None = None, settings: dict[str, Any] | None = None,
                 engine_path: str | None = None, engine_cache: str | Path | None = None, device: int = 0,
                 trust_engine: bool = False) -> None:
        super().__init__(model_path, threads)
        self.settings = settings or {}
        self.engine_path = engine_path
        self.engine_cache = Path(engine_cache) if engine_cache else cache_dir()
        self.device = device
        self.trust_engine = trust_engine
        self.engine_source = ""
        """How the engine was obtained: ``bundle``, ``cache`` or ``built``."""
        self.bundle_engine = ""
        """What became of the bundle's engine: ``used``, ``none`` (the bundle has none), ``mismatch`` (built
        for another GPU or TensorRT version) or ``untrusted`` (it matches, but the caller did not trust it)."""
        self.build_seconds = 0.0
        self.gpu: dict[str, Any] = {}
        self.tensorrt_version = ""
        self._cuda: CudaDriver | None = None
        self._trt: Any = None
        self._logger: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream = 0
        self._buffers: dict[str, tuple[int, int]] = {}
        self._dtypes: dict[str, np.dtype] = {}
        self._pushed = False

    def activate_impl(self) -> None:
        self._trt = _import_trt()
        self._cuda = CudaDriver(self.device)
        self.gpu = self._cuda.info()
        self.tensorrt_version = str(self._trt.__version__)
        self._cuda.push_primary_context()
        self._pushed = True
        try:
            self._load(self._engine_bytes())
        except BaseException:
            self._release()
            raise

    def _engine_bytes(self) -> bytes:
        self.bundle_engine = self._bundle_engine_use()
        if self.bundle_engine == "used":
            self.engine_source = "bundle"
            return Path(str(self.engine_path)).read_bytes()
        cached = self.engine_cache / f"{engine_key(self.model_path, self.settings, self.gpu, self.tensorrt_version)}.plan"
        if cached.is_file():
            self.engine_source = "cache"
            return cached.read_bytes()
        start = time.perf_counter()
        plan = build_engine(self.model_path, self.settings, timing_cache_path(self.gpu, self.tensorrt_version, self.engine_cache))
        self.build_seconds = time.perf_counter() - start
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_bytes(plan)
        os.replace(tmp, cached)
        self.engine_source = "built"
        return plan

    def _bundle_engine_use(self) -> str:
        """``used`` when the bundle's engine may be loaded, else why not (see :attr:`bundle_engine`)."""
        if not self.engine_path or not Path(self.engine_path).is_file():
            return "none"
        if not bundle_engine_matches(self.settings, self.gpu, self.tensorrt_version):
            return "mismatch"
        return "used" if self.trust_engine else "untrusted"

    def _load(self, plan: bytes) -> None:
        trt = self._trt
        lines: list[str] = []
        self._logger = _make_logger(trt, lines)
        self._runtime = trt.Runtime(self._logger)  # kept alive as long as the engine
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise RunnerError(f"TensorRT could not load the engine: {lines[-1] if lines else 'no detail'}")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        assert self._cuda is not None
        self._stream = self._cuda.stream()

    def _buffer(self, name: str, nbytes: int) -> int:
        """Device buffer for a tensor, grown when a larger shape comes."""
        assert self._cuda is not None
        ptr, size = self._buffers.get(name, (0, 0))
        if nbytes > size:
            if ptr:
                self._cuda.free(ptr)
            ptr, size = self._cuda.malloc(nbytes), nbytes
            self._buffers[name] = (ptr, size)
        return ptr

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda, ctx = self._cuda, self._context
        assert cuda is not None and ctx is not None
        staged = []
        for name in self.input_names:
            arr = np.ascontiguousarray(feed[name], dtype=self._dtypes[name])
            if not ctx.set_input_shape(name, arr.shape):
                raise RunnerError(f"input {name!r} shape {arr.shape} is outside the engine's profile {self._profile(name)}")
            ptr = self._buffer(name, arr.nbytes)
            cuda.to_device(ptr, arr, self._stream)
            ctx.set_tensor_address(name, ptr)
            staged.append(arr)
        outputs = {}
        for name in self.output_names:
            shape = tuple(ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RunnerError(f"output {name!r} has a data-dependent shape {shape}, which this runner does not support")
            out = np.empty(shape, self._dtypes[name])
            ctx.set_tensor_address(name, self._buffer(name, out.nbytes))
            outputs[name] = out
        if not ctx.execute_async_v3(self._stream):
            raise RunnerError("TensorRT failed to enqueue the inference")
        for name, out in outputs.items():
            cuda.to_host(out, self._buffers[name][0], self._stream)
        cuda.sync(self._stream)
        return outputs

    def _profile(self, name: str) -> str:
        dims = (self.settings.get("profiles") or {}).get(name)
        return f"min {dims['min']} opt {dims['opt']} max {dims['max']}" if dims else "(static shapes)"

    def deactivate_impl(self) -> None:
        self._release()

    def _release(self) -> None:
        cuda = self._cuda
        self._context = None
        self._engine = None
        self._runtime = None
        if cuda is None:
            return
        for ptr, _ in self._buffers.values():
            cuda.free(ptr)
        self._buffers = {}
        if self._stream:
            cuda.destroy_stream(self._stream)
            self._stream = 0
        if self._pushed:
            cuda.pop_primary_context()
            self._pushed = False
        self._cuda = None


def open_runner(bundle_dir: str | Path, model_file: str, threads: int | None = None,
                trust_engine: bool = False) -> Runner:
    """The TensorRT runner where engines can run here, else an onnxruntime runner over the bundle's ONNX.

    The choice is visible as the runner's ``runtime`` attribute (``tensorrt`` or ``onnxruntime``).
    ``trust_engine`` lets the runner load the bundle's prebuilt engine (see :class:`TensorRTRunner`).
    """
    bundle = Path(bundle_dir)
    if engine_unavailable_reason() is None:
        settings = load_settings(bundle)
        engine = settings.get("engine") or {}
        engine_path = _engine_path(bundle, engine["file"]) if engine.get("file") else None
        return TensorRTRunner(str(bundle / model_file), threads, settings=settings, engine_path=engine_path,
                              trust_engine=trust_engine)
    return OrtRunner(str(bundle / model_file), threads=threads)
