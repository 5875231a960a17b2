"""Editing ``torch.export`` programs: lift aten calls back to nn modules, re-export, count cost, and
load a user's fine-tune callable. Shared by the pruning passes (private: the pass registry skips it)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgec.compiler.importers.torch import _describe, _resolve_factory, spec_dim_hints
from edgec.core.errors import ConfigError, ExportError, UnsupportedError, brief, require
from edgec.core.types import FORMAT_PT2, ModelArtifact, sha256_file
from edgec.frameworks.torch_utils import safe_load_pt2

EXAMPLE_DIM = 2
"""Size given to dynamic dims in the example inputs used for tracing and re-export (0 and 1 specialise)."""


# --- loading and lifting -------------------------------------------------------------------------


def load_for_editing(path: Path) -> tuple[Any, Any, tuple[Any, ...]]:
    """Load a ``.pt2`` safely and return ``(exported_program, editable_module, example_inputs)``.

    The module is a ``torch.fx.GraphModule`` in eval mode with real layer modules (:func:`lift_modules`).
    """
    torch = require("torch", "torch", "pruning PyTorch models")
    ep = safe_load_pt2(path)
    unlifted = ep.module()
    lift_modules(unlifted)
    module = torch.fx.GraphModule(unlifted, unlifted.graph)
    module.eval()
    return ep, module, example_inputs(ep)


def lift_modules(gm: Any) -> int:
    """Replace aten calls of layers on plain attributes by calls of equivalent ``nn`` modules, in place.

    Returns:
        How many calls were lifted.
    """
    lifted = 0
    for node in list(gm.graph.nodes):
        made = _module_for(gm, node) if node.op == "call_function" else None
        if made is None:
            continue
        module, data_input, tensors = made
        owner = _place(gm, module, tensors, lifted)
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(owner, (data_input,))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
        lifted += 1
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return lifted


def _module_for(gm: Any, node: Any) -> tuple[Any, Any, dict[str, Any]] | None:
    """An ``nn`` module computing ``node``, its data input, and the get_attr nodes it takes over."""
    builder = _builders().get(str(node.target))
    if builder is None:
        return None
    args = node.normalized_arguments(gm, normalize_to_only_use_kwargs=True)
    if args is None:
        return None
    kwargs = dict(args.kwargs)
    tensors = {k: v for k, v in kwargs.items() if k in _TENSOR_ARGS and v is not None}
    if not tensors or any(t.op != "get_attr" or len(t.users) != 1 for t in tensors.values()):
        return None  # shared or computed weights stay functional
    values = {k: _attr(gm, t.target) for k, t in tensors.items()}
    module = builder(kwargs, values, node)
    if module is None:
        return None
    data = kwargs.get("input", kwargs.get("indices"))
    return module, data, tensors


_TENSOR_ARGS = ("weight", "bias", "running_mean", "running_var")


def _attr(gm: Any, target: str) -> Any:
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _builders() -> dict[str, Callable[[dict[str, Any], dict[str, Any], Any], Any]]:
    builders: dict[str, Callable[[dict[str, Any], dict[str, Any], Any], Any]] = {}
    for rank in (1, 2, 3):
        for overload in ("default", "padding"):
            builders[f"aten.conv{rank}d.{overload}"] = _conv(rank, transposed=False)
        builders[f"aten.conv_transpose{rank}d.input"] = _conv(rank, transposed=True)
    builders["aten.linear.default"] = _linear
    builders["aten.batch_norm.default"] = _batch_norm
    builders["aten.layer_norm.default"] = _layer_norm
    builders["aten.group_norm.default"] = _group_norm
    builders["aten.embedding.default"] = _embedding
    return builders


def _conv(rank: int, transposed: bool) -> Callable[[dict[str, Any], dict[str, Any], Any], Any]:
    def build(kw: dict[str, Any], values: dict[str, Any], node: Any) -> Any:
        from torch import nn

        w = values["weight"]
        groups = int(kw.get("groups", 1))
        common = {"stride": kw.get("stride", 1), "padding": kw.get("padding", 0), "dilation": kw.get("dilation", 1),
                  "groups": groups, "bias": "bias" in values}
        kernel = tuple(w.shape[2:])
        module: Any
        if transposed:
            up = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[rank - 1]
            module = up(w.shape[0], w.shape[1] * groups, kernel, output_padding=kw.get("output_padding", 0), **common)
        else:
            conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[rank - 1]
            module = conv(w.shape[1] * groups, w.shape[0], kernel, **common)
        return _adopt(module, values)
    return build


def _linear(kw: dict[str, Any], values: dict[str, Any], node: Any) -> Any:
    from torch import nn

    w = values["weight"]
    return _adopt(nn.Linear(w.shape[1], w.shape[0], bias="bias" in values), values)


def _batch_norm(kw: dict[str, Any], values: dict[str, Any], node: Any) -> Any:
    from torch import nn

    if kw.get("training") or "running_mean" not in values:
        return None  # batch statistics at inference: not a standard eval-mode layer
    rank = len(node.meta["val"].shape)
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank)
    if cls is None:
        return None
    module = cls(values["running_mean"].shape[0], eps=kw["eps"], momentum=kw["momentum"], affine="weight" in values)
    module.eval()
    return _adopt(module, values)


def _layer_norm(kw: dict[str, Any], values: dict[str, Any], node: Any) -> Any:
    from torch import nn

    module = nn.LayerNorm(tuple(kw["normalized_shape"]), eps=kw.get("eps", 1e-5), elementwise_affine="weight" in values,
                          bias="bias" in values)
    return _adopt(module, values)


def _group_norm(kw: dict[str, Any], values: dict[str, Any], node: Any) -> Any:
    from torch import nn

    if "weight" not in values:
        return None
    module = nn.GroupNorm(int(kw["num_groups"]), values["weight"].shape[0], eps=kw.get("eps", 1e-5))
    return _adopt(module, values)


def _embedding(kw: dict[str, Any], values: dict[str, Any], node: Any) -> Any:
    from torch import nn

    w = values["weight"]
    padding = kw.get("padding_idx", -1)
    module = nn.Embedding(w.shape[0], w.shape[1], padding_idx=None if padding == -1 else padding)
    return _adopt(module, values)


def _adopt(module: Any, values: dict[str, Any]) -> Any:
    """Make ``module`` hold the given tensors (the same objects: no copy)."""
    import torch

    for name, value in values.items():
        if isinstance(value, torch.nn.Parameter):
            setattr(module, name, value)
        else:
            module.register_buffer(name, value)
    if "bias" not in values and hasattr(module, "bias") and isinstance(module.bias, torch.nn.Parameter):
        module.bias = None
    return module


def _place(gm: Any, module: Any, tensors: dict[str, Any], index: int) -> str:
    """Install ``module`` where its tensors lived (same state-dict names) when that owner holds nothing else."""
    torch = require("torch", "torch", "pruning PyTorch models")
    targets = {t.target for t in tensors.values()}
    owners = {t.rsplit(".", 1)[0] if "." in t else "" for t in targets}
    if len(owners) == 1 and "" not in owners:
        owner = owners.pop()
        current = gm.get_submodule(owner)
        held = {f"{owner}.{n}" for n, _ in current.named_parameters(recurse=False)}
        held |= {f"{owner}.{n}" for n, _ in current.named_buffers(recurse=False) if not n.endswith("num_batches_tracked")}
        if type(current) is torch.nn.Module and not list(current.children()) and held == targets:
            _keep_counter(current, module)
            gm.set_submodule(owner, module)
            return str(owner)
    name = f"edgec_lifted_{index}"
    gm.add_submodule(name, module)
    return name


def _keep_counter(old: Any, module: Any) -> None:
    counter = getattr(old, "num_batches_tracked", None)
    if counter is not None and hasattr(module, "num_batches_tracked"):
        module.num_batches_tracked = counter


def _submodule(module: Any, name: str) -> Any:
    try:
        return module.get_submodule(name)
    except AttributeError:
        raise ConfigError(f"prune option ignore: the model has no module named {name!r}") from None


def output_layers(module: Any) -> list[Any]:
    """Prunable layers whose output channels reach a model output without crossing another prunable layer."""
    torch = require("torch", "torch", "pruning PyTorch models")
    kinds = (torch.nn.modules.conv._ConvNd, torch.nn.Linear, torch.nn.Embedding)
    found: list[Any] = []
    seen: set[Any] = set()
    stack = [n for n in module.graph.nodes if n.op == "output"]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module" and isinstance(module.get_submodule(node.target), kinds):
            found.append(module.get_submodule(node.target))
            continue
        stack.extend(node.all_input_nodes)
    return found


# --- example inputs, checks, re-export ------------------------------------------------------------


def _user_placeholders(ep: Any) -> list[Any]:
    user = set(ep.graph_signature.user_inputs)
    return [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in user]


def _dim_range(ep: Any, dim: Any) -> tuple[int, int | None]:
    bounds = ep.range_constraints.get(dim.node.expr)
    if bounds is None:
        return 0, None
    upper = bounds.upper
    return int(bounds.lower), (int(upper) if upper.is_finite and int(upper) < 2**62 else None)


def example_inputs(ep: Any, batch: int | None = None) -> tuple[Any, ...]:
    """Random inputs fitting the program: dynamic dims at :data:`EXAMPLE_DIM` (clamped to their range).

    Args:
        ep: the exported program.
        batch: size for dynamic dims instead (e.g. 1 to count MACs per sample).
    """
    torch = require("torch", "torch", "pruning PyTorch models")
    gen = torch.Generator().manual_seed(0)
    tensors = []
    for node in _user_placeholders(ep):
        val = node.meta["val"]
        shape = [_concrete(ep, d, batch) for d in val.shape]
        if val.dtype.is_floating_point:
            tensors.append(torch.randn(shape, generator=gen).to(val.dtype))
        elif val.dtype == torch.bool:
            tensors.append(torch.ones(shape, dtype=torch.bool))
        else:
            tensors.append(torch.zeros(shape, dtype=val.dtype))
    return tuple(tensors)


def _concrete(ep: Any, dim: Any, wanted: int | None) -> int:
    if isinstance(dim, int):
        return dim
    low, high = _dim_range(ep, dim)
    size = max(low, wanted if wanted is not None else EXAMPLE_DIM)
    return min(size, high) if high is not None else size


def dynamic_shapes(ep: Any) -> tuple[dict[int, Any] | None, ...]:
    """``dynamic_shapes`` for ``torch.export.export`` that re-declare the program's symbolic dims and ranges."""
    torch = require("torch", "torch", "pruning PyTorch models")
    dims: dict[str, Any] = {}
    spec: list[dict[int, Any] | None] = []
    for node in _user_placeholders(ep):
        entry = {}
        for axis, dim in enumerate(node.meta["val"].shape):
            if isinstance(dim, int):
                continue
            key = str(dim.node.expr)
            if key not in dims:
                low, high = _dim_range(ep, dim)
                bounds = {"min": low} if high is None else {"min": low, "max": high}
                dims[key] = torch.export.Dim(f"{node.name}_dim{axis}", **bounds)
            entry[axis] = dims[key]
        spec.append(entry or None)
    return tuple(spec)


def flat_outputs(out: Any) -> list[Any]:
    """A module's outputs as a list (a single tensor, or a tuple/list of them)."""
    return list(out) if isinstance(out, (tuple, list)) else [out]


def check_outputs(module: Any, example: tuple[Any, ...], shapes: list[tuple[int, ...]], what: str) -> None:
    """Raise when ``module`` no longer runs on ``example`` or its outputs changed shape.

    Raises:
        UnsupportedError: the edited graph is inconsistent.
    """
    torch = require("torch", "torch", "pruning PyTorch models")
    try:
        with torch.no_grad():
            got = [tuple(t.shape) for t in flat_outputs(module.eval()(*example))]
    except Exception as exc:  # running the edited model: torch's errors (any type) on an inconsistent graph are the finding
        text = brief(exc, 200)
        raise UnsupportedError(
            f"after {what} the model no longer runs ({type(exc).__name__}: {text})",
            hint="the model probably hard-codes a channel count (e.g. x.view(-1, 256)); use torch.flatten or x.view(x.size(0), -1)",
        ) from exc
    if got != shapes:
        raise UnsupportedError(f"after {what} the model outputs {got} instead of {shapes}")


def reexport(module: Any, ep: Any, artifact: ModelArtifact, example: tuple[Any, ...], path: Path) -> ModelArtifact:
    """``torch.export`` ``module`` with ``ep``'s dynamic dims, save it to ``path`` and describe it.

    Raises:
        ExportError: torch.export could not capture the edited module.
    """
    torch = require("torch", "torch", "pruning PyTorch models")
    try:
        with torch.no_grad():
            new = torch.export.export(module.eval(), example, dynamic_shapes=dynamic_shapes(ep))
    except Exception as exc:  # one torch.export call: Unsupported, UserError or any type for a module it cannot capture
        raise ExportError(f"torch.export could not re-capture the pruned model: {brief(exc, 300)}") from exc
    torch.export.save(new, str(path))
    inputs, outputs = _describe(new, [s.name for s in artifact.outputs], spec_dim_hints(artifact.inputs))
    return ModelArtifact(path, FORMAT_PT2, inputs, outputs, sha256_file(path))


# --- cost -----------------------------------------------------------------------------------------


def model_cost(module: Any, ep: Any) -> dict[str, Any]:
    """Parameters, nonzero parameters and MACs per sample (``torch.utils.flop_counter``; FLOPs / 2)."""
    torch = require("torch", "torch", "pruning PyTorch models")
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module.eval()(*example_inputs(ep, batch=1))
    params = sum(p.numel() for p in module.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in module.parameters())
    return {"params": params, "macs": counter.get_total_flops() // 2,
            "sparsity": round(1 - nonzero / params, 6) if params else 0.0}


def _channels(module: Any) -> dict[str, int]:
    torch = require("torch", "torch", "pruning PyTorch models")
    kept = {}
    for name, layer in module.named_modules():
        if isinstance(layer, torch.nn.modules.conv._ConvNd):
            kept[name] = int(layer.out_channels)
        elif isinstance(layer, torch.nn.Linear):
            kept[name] = int(layer.out_features)
    return kept


# --- user fine-tune callable ----------------------------------------------------------------------


def load_finetune(spec: str) -> tuple[Callable[[Any], Any], Path | None]:
    """Resolve ``file.py:function`` or ``package.module:function`` to the callable and its defining file.

    Raises:
        ConfigError: malformed spec, missing file or module, or no such function.
    """
    target, sep, func = spec.rpartition(":")
    if not sep or not target or not func.isidentifier():
        raise ConfigError(f"bad --finetune {spec!r}; expected file.py:function or package.module:function")
    try:
        return _resolve_factory(target, func)
    except ConfigError as exc:
        if "has no function" in exc.message:
            raise ConfigError(f"{target} has no function {func!r}; expected finetune(module) -> module") from None
        raise


def finetune_options(spec: str | None) -> dict[str, Any]:
    """Pass options for a fine-tune callable: its spec and the digest of its file (part of the cache key).

    Raises:
        ConfigError: the callable cannot be resolved.
    """
    if spec is None:
        return {}
    _, origin = load_finetune(spec)
    digest = hashlib.sha256(origin.read_bytes()).hexdigest() if origin is not None and origin.is_file() else None
    return {"finetune": spec, "finetune_sha256": digest}


def run_finetune(spec: str | None, module: Any, log: Callable[[str], None]) -> Any:
    """Call the user's ``finetune(module) -> module`` (gradients on), and return the module to export.

    Raises:
        ExportError: the callable raised or returned something that is not an ``nn.Module``.
    """
    if spec is None:
        return module
    torch = require("torch", "torch", "fine-tuning PyTorch models")
    func, _ = load_finetune(spec)
    log(f"fine-tuning with {spec}")
    try:
        with torch.enable_grad():
            result = func(module)
    except Exception as exc:  # the user's own fine-tune callable: whatever it raises is the user's to fix
        raise ExportError(f"finetune {spec} raised {type(exc).__name__}: {brief(exc, 300)}") from exc
    if not isinstance(result, torch.nn.Module):
        raise ExportError(f"finetune {spec} returned {type(result).__name__}; expected the nn.Module to export")
    return result.eval()


def iter_weights(module: Any) -> Iterator[tuple[str, Any]]:
    """``(name, layer)`` for every convolution and linear layer (the weights that sparsity applies to)."""
    torch = require("torch", "torch", "pruning PyTorch models")
    for name, layer in module.named_modules():
        if isinstance(layer, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)):
            yield name, layer

