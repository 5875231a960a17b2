"""PyTorch importer: ``file.py:factory`` / ``package.module:factory`` sources and ``torch.export`` ``.pt2`` files.

A factory returns ``(module, example_inputs)`` or ``(module, example_inputs, extras)`` where extras may
hold ``dynamic_shapes`` (as for ``torch.export.export``) and ``output_names``. The module is captured
with ``torch.export`` and stored as a ``.pt2`` in the stage cache; the ``export_onnx`` pass turns it into
ONNX for targets that take ONNX.

``.pt2`` files are loaded only after every archive member passed an allow-list of what
``torch.export.save`` writes for a plain program (no AOTInductor shared objects, no pickles; see
``_pt2_archive``), and with ``torch.load`` forced to ``weights_only=True``: a model file must never run
code on load.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgec.compiler.cache import StageCache, cache_key
from edgec.compiler.importers._pt2_archive import check_pt2_archive
from edgec.compiler.importers.base import Feed, Importer, ImportResult
from edgec.core.errors import ConfigError, ExportError, UnsupportedError, require
from edgec.core.types import FORMAT_PT2, ModelArtifact, TensorSpec, sha256_file

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")


def _torch() -> Any:
    return require("torch", "torch", "importing PyTorch models")


class TorchImporter(Importer):
    """PyTorch factories and ``.pt2`` exported programs."""

    name = "torch"
    extra = "torch"
    formats = (FORMAT_PT2,)

    @classmethod
    def claims(cls, source: str) -> bool:
        if source.lower().endswith((".pt2", *PICKLE_SUFFIXES)):
            return True
        target, sep, func = source.rpartition(":")
        return bool(sep and func.isidentifier() and (target.endswith(".py") or _is_dotted(target)))

    def load(self, source: str, cache: StageCache, log: Callable[[str], None]) -> ImportResult:
        if source.lower().endswith(PICKLE_SUFFIXES):
            raise UnsupportedError(
                f"{source} looks like a pickled PyTorch checkpoint; edgec never unpickles model files",
                hint="export it with torch.export.save(...) to a .pt2, or give a factory as file.py:function",
            )
        if source.lower().endswith(".pt2"):
            return self._load_pt2(Path(source), cache)
        return self._load_factory(source, cache, log)

    def _load_pt2(self, path: Path, cache: StageCache) -> ImportResult:
        if not path.is_file():
            raise ConfigError(f"model file not found: {path} (expected an existing .pt2 file)")
        digest = sha256_file(path)
        ep = safe_load_pt2(path)
        inputs, outputs = _describe(ep, None)
        artifact = ModelArtifact(path, FORMAT_PT2, inputs, outputs, digest)
        return ImportResult(artifact, path.stem, FORMAT_PT2, digest)

    def _load_factory(self, source: str, cache: StageCache, log: Callable[[str], None]) -> ImportResult:
        torch = _torch()
        target, _, func = source.rpartition(":")
        factory, origin = _resolve_factory(target, func)
        log(f"calling {source}")
        module, args, kwargs, extras = _call_factory(factory, source)
        digest = _factory_digest(torch, origin, module, args, kwargs, extras)
        key = cache_key("import-torch", digest, torch.__version__)

        def produce(out: Path) -> dict[str, Any]:
            log("capturing the module with torch.export")
            try:
                with torch.no_grad():
                    ep = torch.export.export(module.eval(), args, kwargs, dynamic_shapes=extras.get("dynamic_shapes"))
            except Exception as exc:
                raise ExportError(f"torch.export could not capture {source}: {_short(exc)}") from exc
            torch.export.save(ep, str(out / "model.pt2"))
            inputs, outputs = _describe(ep, extras.get("output_names"))
            return {"inputs": [s.to_json() for s in inputs], "outputs": [s.to_json() for s in outputs]}

        entry, meta, _ = cache.get_or_create(key, produce)
        path = entry / "model.pt2"
        inputs = tuple(TensorSpec.from_json(s) for s in meta["inputs"])
        outputs = tuple(TensorSpec.from_json(s) for s in meta["outputs"])
        name = target.rsplit("/", 1)[-1].removesuffix(".py").rsplit(".", 1)[-1]
        return ImportResult(ModelArtifact(path, FORMAT_PT2, inputs, outputs, digest), name, "torch-factory", digest)

    def reference(self, artifact: ModelArtifact, feeds: list[Feed]) -> list[Feed]:
        torch = _torch()
        module = safe_load_pt2(artifact.path).module()
        names = [s.name for s in artifact.outputs]
        results = []
        with torch.no_grad():
            for feed in feeds:
                out = module(*[torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in artifact.inputs])
                flat = list(out) if isinstance(out, (tuple, list)) else [out]
                results.append({n: t.detach().cpu().numpy() for n, t in zip(names, flat)})
        return results


def _is_dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _resolve_factory(target: str, func: str) -> tuple[Callable[..., Any], Path | None]:
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"model file not found: {target} (expected a Python file defining {func}())")
        spec = importlib.util.spec_from_file_location(f"_edgec_user_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.resolve().parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ExportError(f"importing {target} failed: {type(exc).__name__}: {_short(exc)}") from exc
        finally:
            sys.path.pop(0)
        origin: Path | None = path
    else:
        if "" not in sys.path:
            sys.path.insert(0, "")
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(f"cannot import module {target!r}: {exc}") from None
        origin = Path(module.__file__) if module.__file__ else None
    factory = getattr(module, func, None)
    if not callable(factory):
        raise ConfigError(f"{target} has no function {func!r}; expected a factory returning (module, example_inputs)")
    return factory, origin


def _call_factory(factory: Callable[..., Any], source: str) -> tuple[Any, tuple[Any, ...], dict[str, Any], dict[str, Any]]:
    torch = _torch()
    try:
        result = factory()
    except Exception as exc:
        raise ExportError(f"{source} raised {type(exc).__name__}: {_short(exc)}") from exc
    if not isinstance(result, tuple) or len(result) not in (2, 3) or not isinstance(result[0], torch.nn.Module):
        raise ConfigError(f"{source} must return (nn.Module, example_inputs) or (nn.Module, example_inputs, extras)")
    module, example = result[0], result[1]
    extras = dict(result[2]) if len(result) == 3 else {}
    if isinstance(example, dict):
        return module, (), example, extras
    args = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    return module, args, {}, extras


def _factory_digest(torch: Any, origin: Path | None, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], extras: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    if origin is not None and origin.is_file():
        digest.update(origin.read_bytes())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for value in [*args, *kwargs.values()]:
        if isinstance(value, torch.Tensor):
            digest.update(f"{tuple(value.shape)}{value.dtype}".encode())
    digest.update(json.dumps({k: str(v) for k, v in extras.items()}, sort_keys=True).encode())
    return digest.hexdigest()


def _describe(ep: Any, output_names: list[str] | None) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    torch = _torch()
    user_inputs = set(ep.graph_signature.user_inputs)
    inputs = []
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            inputs.append(_spec(torch, node.name, node.meta["val"]))
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    user_outputs = list(ep.graph_signature.user_outputs)
    vals = [a.meta["val"] for a in out_node.args[0] if getattr(a, "name", None) in user_outputs]
    names = list(output_names or (["output"] if len(vals) == 1 else [f"output_{i}" for i in range(len(vals))]))
    if len(names) != len(vals):
        raise ConfigError(f"output_names has {len(names)} names but the model returns {len(vals)} outputs")
    return tuple(inputs), tuple(_spec(torch, n, v) for n, v in zip(names, vals))


def _spec(torch: Any, name: str, val: Any) -> TensorSpec:
    dims = tuple(int(d) if isinstance(d, int) else str(d) for d in val.shape)
    dtype = str(torch.empty((), dtype=val.dtype).numpy().dtype)
    return TensorSpec(name, dims, dtype)


@contextlib.contextmanager
def _quiet_export_log() -> Iterator[None]:
    """torch.export logs a traceback before re-raising a load error; the one-line ExportError says it."""
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _no_pickle(torch: Any) -> Iterator[None]:
    import pickle

    real_load, real_loads, real_c = torch.load, pickle.loads, torch._C._pickle_load_obj

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ExportError("the .pt2 file holds pickled objects; edgec refuses to unpickle model files")

    def weights_only(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    torch.load, pickle.loads, torch._C._pickle_load_obj = weights_only, refuse, refuse
    try:
        yield
    finally:
        torch.load, pickle.loads, torch._C._pickle_load_obj = real_load, real_loads, real_c


def safe_load_pt2(path: Path) -> Any:
    """Load a ``.pt2`` exported program without unpickling anything.

    Every archive member is checked against an allow-list (:func:`check_pt2_archive`) before torch
    opens the file, so AOTInductor shared objects and pickles are refused before anything is loaded.

    Raises:
        ExportError: the file is not a valid archive, holds a member outside the allow-list, or holds
            pickled objects.
    """
    check_pt2_archive(path)
    torch = _torch()
    try:
        with _no_pickle(torch), _quiet_export_log():
            return torch.export.load(str(path))
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"could not load {path} as a torch.export program: {_short(exc)}") from exc
