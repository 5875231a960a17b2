"""PyTorch importer: ``file.py:factory`` / ``package.module:factory`` sources and ``torch.export`` ``.pt2`` files.

A factory returns ``(module, example_inputs)`` or ``(module, example_inputs, extras)`` where extras may
hold ``dynamic_shapes`` (as for ``torch.export.export``) and ``output_names``. The module is captured
with ``torch.export`` and stored as a ``.pt2`` in the stage cache; the ``export_onnx`` pass turns it into
ONNX for targets that take ONNX.

Names: inputs are named as ``torch.export`` names the program's inputs, after ``forward``'s parameters
(``forward(self, x, h, c)``: ``x``, ``h``, ``c``); a tuple or list argument gives one input per tensor in it,
``state_0``, ``state_1``... (``forward(self, x, state)`` with ``state = (h, c)``), a dict argument one per key
(``state_h``, ``state_c``); the calibration data and the golden inputs use these names as keys. Outputs are what ``forward`` returns flattened in order (``y, (h, c)``
gives three), named by ``output_names`` or ``output`` / ``output_0``, ``output_1``...

``.pt2`` files are loaded with :func:`edgec.frameworks.torch_utils.safe_load_pt2`: every archive member
is checked against an allow-list of what ``torch.export.save`` writes for a plain program (no AOTInductor
shared objects, no pickles), and ``torch.load`` is forced to ``weights_only=True``: a model file must never
run code on load.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import itertools
import json
import logging
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgec.compiler.cache import StageCache, cache_key
from edgec.compiler.importers.base import Feed, Importer, ImportResult
from edgec.compiler.source_digest import source_digest
from edgec.core.errors import USER_CODE_PREFIX, ConfigError, ExportError, UnsupportedError, brief, require
from edgec.core.types import FORMAT_PT2, ModelArtifact, TensorSpec, sha256_file
from edgec.frameworks.torch_utils import safe_load_pt2

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")
DESCRIBE_VERSION = "2"
"""Part of the import cache key: bumped when the specs recorded for a capture change (2: named dims)."""


QUIET_LOGGERS = ("torchao", "torch.utils._pytree")
"""Loggers of torch add-ons that warn on import about nothing a user can act on (torchao's CUDA-only kernels
on a CPU machine, pytree deprecations; transformers imports torchao when the executorch extra installed it)."""

LSTM_WEIGHTS_WARNING = r"The tensor attributes self\.\S*_flat_weights"
"""torch.export's warning on every ``nn.LSTM``/``GRU``/``RNN`` (torch's own ``_flat_weights`` list): nothing to act on."""


def _torch() -> Any:
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:  # a level the user set stays
            logger.setLevel(logging.ERROR)
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

    @classmethod
    def source_name(cls, source: str) -> str:
        """A ``.pt2``'s file stem; a factory's module name (``models/net.py:make`` and ``pkg.net:make``: ``net``)."""
        if source.lower().endswith((".pt2", *PICKLE_SUFFIXES)):
            return Path(source).stem
        return source.rpartition(":")[0].rsplit("/", 1)[-1].removesuffix(".py").rsplit(".", 1)[-1]

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
        return ImportResult(artifact, self.source_name(str(path)), FORMAT_PT2, digest)

    def _load_factory(self, source: str, cache: StageCache, log: Callable[[str], None]) -> ImportResult:
        torch = _torch()
        target, _, func = source.rpartition(":")
        factory, origin = _resolve_factory(target, func)
        log(f"calling {source}")
        module, args, kwargs, extras = _call_factory(factory, source)
        digest = _factory_digest(torch, origin, module, args, kwargs, extras)
        key = cache_key("import-torch", DESCRIBE_VERSION, digest, torch.__version__, source_digest())

        def produce(out: Path) -> dict[str, Any]:
            log("capturing the module with torch.export")
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=LSTM_WEIGHTS_WARNING, category=UserWarning)
                    ep = torch.export.export(module.eval(), args, kwargs, dynamic_shapes=extras.get("dynamic_shapes"))
            except Exception as exc:  # one call tracing the user's module: torch raises Unsupported, UserError, any type
                raise ExportError(f"torch.export could not capture {source}: {brief(exc)}") from exc
            torch.export.save(ep, str(out / "model.pt2"))
            hints = dim_hints(extras.get("dynamic_shapes"), list(ep.graph_signature.user_inputs))
            inputs, outputs = _describe(ep, extras.get("output_names"), hints)
            return {"inputs": [s.to_json() for s in inputs], "outputs": [s.to_json() for s in outputs]}

        entry, meta, _ = cache.get_or_create(key, produce, kind="import")
        path = entry / "model.pt2"
        inputs = tuple(TensorSpec.from_json(s) for s in meta["inputs"])
        outputs = tuple(TensorSpec.from_json(s) for s in meta["outputs"])
        return ImportResult(ModelArtifact(path, FORMAT_PT2, inputs, outputs, digest), self.source_name(source),
                            "torch-factory", digest)

    def reference(self, artifact: ModelArtifact, feeds: list[Feed]) -> list[Feed]:
        torch = _torch()
        program = safe_load_pt2(artifact.path)
        module = program.module()
        names = [s.name for s in artifact.outputs]
        results = []
        with torch.no_grad():
            for feed in feeds:
                flat = [torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in artifact.inputs]
                args, kwargs = torch.utils._pytree.tree_unflatten(flat, program.call_spec.in_spec)
                leaves = torch.utils._pytree.tree_leaves(module(*args, **kwargs))
                results.append({n: t.detach().cpu().numpy() for n, t in zip(names, leaves)})
        return results


def _is_dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))



def _resolve_factory(target: str, func: str) -> tuple[Callable[..., Any], Path | None]:
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"model file not found: {target} (expected a Python file defining {func}())")
        spec = importlib.util.spec_from_file_location(f"{USER_CODE_PREFIX}{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.resolve().parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's own file runs here: whatever it raises is the user's to fix
            raise ExportError(f"importing {target} failed: {type(exc).__name__}: {brief(exc)}") from exc
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
    except Exception as exc:  # the user's own factory: whatever it raises is the user's to fix
        raise ExportError(f"{source} raised {type(exc).__name__}: {brief(exc)}") from exc
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


DimHints = dict[tuple[str, int], str]
"""Names the user gave dynamic dims, by (input name, axis)."""

SHAPE_SYMBOL = re.compile(r"\b[su]\d+\b")
"""torch.export's shape symbols: ``s<n>`` for input dims, ``u<n>`` for data-dependent (unbacked) sizes."""


def _describe(ep: Any, output_names: list[str] | None,
              hints: DimHints | None = None) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The program's user inputs and outputs as specs, symbolic dims named (see :func:`name_dims`)."""
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
    return name_dims(tuple(inputs), tuple(_spec(torch, n, v) for n, v in zip(names, vals)), hints or {})


def _spec(torch: Any, name: str, val: Any) -> TensorSpec:
    dims = tuple(int(d) if isinstance(d, int) else str(d) for d in val.shape)
    dtype = str(torch.empty((), dtype=val.dtype).numpy().dtype)
    return TensorSpec(name, dims, dtype)


def name_dims(inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
              hints: DimHints) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Replace torch.export's shape symbols (``s77``) in the specs with names that say what the dims are.

    Rules, per symbol (each name used once: a symbol that earns a taken name gets ``_2``, ``_3``...):

    1. The name the user gave it (``torch.export.Dim("tokens")`` in the factory's ``dynamic_shapes``, or
       the name an earlier spec of the same program gave that (input, axis)); these are given first.
    2. ``batch`` for the leading dim of an input.
    3. ``seq`` for another dim of an integer input (token ids, attention masks).
    4. ``dim1``, ``dim2``... otherwise (sizes that appear only in outputs included).

    Rules 2-4 go in order of first appearance (inputs in order, then outputs). A symbol keeps its name
    everywhere, so an output ``(s77, 10)`` of an input ``(s77, 1, 8, 8)`` reads ``(batch, 10)``;
    expressions keep their form (``s27 + 1`` -> ``seq + 1``).
    """
    names: dict[str, str] = {}
    for spec in inputs:
        for axis, dim in enumerate(spec.shape):
            if _bare_symbol(dim) and dim not in names and (spec.name, axis) in hints:
                names[str(dim)] = _unique(hints[spec.name, axis], set(names.values()))
    generic = (f"dim{i}" for i in itertools.count(1))
    for is_input, spec in [*((True, s) for s in inputs), *((False, s) for s in outputs)]:
        for axis, dim in enumerate(spec.shape):
            for symbol in SHAPE_SYMBOL.findall(dim) if isinstance(dim, str) else []:
                if symbol not in names:
                    wanted = _wanted_name(spec, axis) if is_input and _bare_symbol(dim) else None
                    names[symbol] = _unique(wanted or next(generic), set(names.values()))
    return tuple(_renamed(s, names) for s in inputs), tuple(_renamed(s, names) for s in outputs)


def _bare_symbol(dim: Any) -> bool:
    return isinstance(dim, str) and SHAPE_SYMBOL.fullmatch(dim) is not None


def _renamed(spec: TensorSpec, names: dict[str, str]) -> TensorSpec:
    dims = tuple(SHAPE_SYMBOL.sub(lambda m: names[m.group()], d) if isinstance(d, str) else d for d in spec.shape)
    return TensorSpec(spec.name, dims, spec.dtype, spec.extra)


def _wanted_name(spec: TensorSpec, axis: int) -> str | None:
    if axis == 0:
        return "batch"
    return "seq" if spec.dtype.startswith(("int", "uint")) else None


def _unique(name: str, taken: set[str]) -> str:
    return name if name not in taken else next(f"{name}_{i}" for i in itertools.count(2) if f"{name}_{i}" not in taken)


def dim_hints(dynamic_shapes: Any, input_names: list[str]) -> DimHints:
    """The names of ``torch.export.Dim`` objects in a factory's ``dynamic_shapes``, by (input, axis).

    Takes the forms ``torch.export.export`` takes for plain tensor inputs: a dict by argument name or a
    tuple/list by position, each entry a dict ``{axis: Dim}`` or a tuple/list of dims (None where static).
    Unnamed dims (``Dim.AUTO``), derived dims (``2 * batch``) and nested inputs give no name.
    """
    if isinstance(dynamic_shapes, dict):
        entries = list(dynamic_shapes.items())
    elif isinstance(dynamic_shapes, (tuple, list)):
        entries = list(zip(input_names, dynamic_shapes))
    else:
        return {}
    hints: DimHints = {}
    for input_name, axes in entries:
        pairs = axes.items() if isinstance(axes, dict) else enumerate(axes) if isinstance(axes, (tuple, list)) else ()
        for axis, dim in pairs:
            name = getattr(dim, "__name__", None)
            if isinstance(axis, int) and isinstance(name, str) and name.isidentifier():
                hints[str(input_name), axis] = name
    return hints


def spec_dim_hints(specs: tuple[TensorSpec, ...]) -> DimHints:
    """The dim names specs already carry, by (input, axis): a re-captured program keeps its names."""
    return {(s.name, axis): d for s in specs for axis, d in enumerate(s.shape)
            if isinstance(d, str) and d.isidentifier() and not SHAPE_SYMBOL.fullmatch(d)}
