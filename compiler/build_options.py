"""The options of ``edgec build``, by help section, and the shell completion of target and precision names.

``--target`` and ``--precision`` take comma-separated lists, so completion completes the last entry
(``--target onnx,tfl<TAB>`` -> ``onnx,tflite``) and leaves out entries already given; precisions are those
of the targets given so far (all targets' when none is).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

from edgec.compiler.synthetic import DEFAULT_INPUT_MAX_MB
from edgec.core.cli_kit import ArgType, Argument, Option

PATH = click.Path(path_type=Path)
OUTPUT = "Source and output"
DATA = "Inputs, calibration and golden data"
QUANT = "Quantization and accuracy"
TARGET = "Target options"
MATRIX = "Matrix and build farm"
CACHE = "Cache and progress"


def out_arg(text: str) -> Path | str:
    """``--out``: a folder, or a store URL kept as text (a Path would fold its ``//``)."""
    return text if "://" in text else Path(text)


def complete_list(names: Iterable[str], incomplete: str) -> list[CompletionItem]:
    """Completions of the last entry of a comma-separated list, without the entries already in it."""
    head, comma, tail = incomplete.rpartition(",")
    given = set(head.split(",")) if comma else set()
    return [CompletionItem(head + comma + name) for name in names if name.startswith(tail) and name not in given]


def complete_targets(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The registered target names (``edgec targets``)."""
    from edgec.targets.base import TARGETS

    return complete_list(TARGETS.names(), incomplete)


def complete_precisions(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The precisions of the targets given so far (of every target when none is)."""
    from edgec.targets.base import TARGETS

    given = {t.strip() for text in ctx.params.get("target") or () for t in text.split(",")}
    precisions = dict.fromkeys(p for cls in TARGETS.all() if not given or cls.name in given for p in cls.precisions)
    return complete_list(precisions, incomplete)


def _option(section: str, *decls: str, **kwargs: Any) -> Option:
    return Option(*decls, section=section, **kwargs)


def _flag(section: str, *decls: str, help: str) -> Option:  # noqa: A002 - click's word
    return Option(*decls, section=section, is_flag=True, default=False, help=help)


def build_params(plugin_options: Sequence[click.Parameter] = ()) -> list[click.Parameter]:
    """Every parameter of ``edgec build``: its own, the targets' named flags, then the plugins' options."""
    return [Argument("source", required=False,
                     help="model.onnx, model.pt2, path/to/file.py:factory or package.module:factory"),
            *_output_options(), *_data_options(), *_quant_options(), *_target_options(), *_matrix_options(),
            *_cache_options(), *plugin_options]


def _output_options() -> list[click.Parameter]:
    return [
        _option(OUTPUT, "-f", "--file", type=PATH, metavar="RECIPE",
                help="build what a recipe (.yaml or .toml) lists instead of SOURCE; see 'edgec recipe schema'"),
        _option(OUTPUT, "--target", multiple=True, metavar="NAME[,NAME...]", shell_complete=complete_targets,
                help="deployment targets (see 'edgec targets'), comma-separated or repeated; default onnx"),
        _option(OUTPUT, "--precision", multiple=True, metavar="P[,P...]", shell_complete=complete_precisions,
                help="fp32, fp16 and/or int8, comma-separated or repeated; default fp32"),
        _option(OUTPUT, "--out", type=ArgType(out_arg, "path", files=True), default=Path("bundles"), metavar="OUT",
                help="output directory; default ./bundles. With --executor ray also a store URL "
                     "(s3://bucket/prefix, gs://, az://, file:///dir) the workers upload bundles to"),
        _option(OUTPUT, "--name", help="bundle name; default: the source's file or factory module name"),
        _flag(OUTPUT, "--force", help="replace an existing bundle"),
        _flag(OUTPUT, "--json", help="print the cells built (status, exit code, bundle, size, parity) as JSON"),
    ]


def _data_options() -> list[click.Parameter]:
    return [
        _option(DATA, "--calib", type=PATH, help=".npz, folder of .npy/.npz, or folder of images"),
        _option(DATA, "--calib-samples", type=int, help="use a deterministic subset of N calibration samples"),
        _option(DATA, "--calib-method", default="minmax", help="minmax, entropy or percentile; default minmax"),
        _option(DATA, "--calib-preprocess",
                help="for image folders: resize=HxW,mean=a/b/c,std=a/b/c,scale=255,layout=nchw|nhwc,mode=rgb|l"),
        _option(DATA, "--calib-max-mb", type=int, default=2048, metavar="MB",
                help="refuse calibration/eval data that would decode to more than MB MiB; default 2048"),
        _option(DATA, "--input", multiple=True, metavar="NAME:DIMS",
                help="sizes of an input's dims, e.g. input:1x3x224x224; a dim may be ? (dynamic) or a range "
                     "[32..640] (320[32..640]: size 320 within it). onnx and openvino keep dynamic dims and use "
                     "the sizes for golden inputs only; other targets fix them in the model (repeatable)"),
        _option(DATA, "--input-max-mb", type=int, default=DEFAULT_INPUT_MAX_MB, metavar="MB",
                help=f"refuse synthetic golden inputs above MB MiB per sample (all inputs); default {DEFAULT_INPUT_MAX_MB}"),
        _option(DATA, "--input-value", multiple=True, metavar="NAME=VALUE",
                help="set an input (e.g. a sample rate) to VALUE in every golden and calibration sample; "
                     "non-float settings are never drawn at random (repeatable)"),
        _flag(DATA, "--fold-input-values", help="write the --input-value values into the graph as constants "
                                                "(ONNX route): the bundle no longer takes those inputs"),
        _option(DATA, "--golden-samples", type=int, default=8, help="golden inputs parity is measured on; default 8"),
        _option(DATA, "--golden-max-mb", type=float, metavar="MB",
                help="cap on the bundle's golden.npz (fewer samples are kept to fit); default 25% of the "
                     "model or 1 MiB, whichever is larger"),
    ]


def _quant_options() -> list[click.Parameter]:
    return [
        _option(QUANT, "--int8-mode", default="auto", help="auto, static or dynamic; default auto"),
        _flag(QUANT, "--no-simplify", help="skip the onnxslim clean-up"),
        _option(QUANT, "--min-cosine", type=float, help="fail when an output's cosine to FP32 is below this"),
        _flag(QUANT, "--allow-degraded",
              help="write a bundle even when its parity collapsed (an output, a part of one on its own scale or its "
                   "deviations from FP32's mean below cosine 0.9, or top-1 agreement below 0.5 on --calib inputs); "
                   "by default that fails with exit 7"),
        _option(QUANT, "--prune", type=float, metavar="RATIO",
                help="remove this fraction of channels (structured) or weights (unstructured); PyTorch sources only"),
        _option(QUANT, "--prune-mode", default="structured", help="structured (default) or unstructured"),
        _option(QUANT, "--finetune", metavar="MODULE:FUNCTION", help="finetune(module) -> module, run after pruning"),
        _flag(QUANT, "--report-layers", help="write a per-layer divergence report (layers.json) into the bundle"),
        _option(QUANT, "--max-drop", type=float,
                help="accuracy budget, e.g. 0.01: keep the most sensitive layers in float until met"),
        _option(QUANT, "--metric", default="top1",
                help="what --max-drop measures: top1 (agreement with FP32), decision (sigmoid outputs, see "
                     "--threshold), cosine, accuracy (needs --eval), or pkg.module:function"),
        _option(QUANT, "--metric-reduce", default="mean", metavar="mean|min|pN",
                help="per-sample scores -> one: mean (default), min (the worst sample) or pN (percentile, e.g. p5)"),
        _option(QUANT, "--threshold", type=float, default=0.5, help="decision threshold of --metric decision; default 0.5"),
        _option(QUANT, "--max-float-layers", type=int, help="with --max-drop: keep at most N layers in float (default 16)"),
        _option(QUANT, "--max-builds", type=int, help="with --max-drop: build and measure at most N candidates (default 8)"),
        _option(QUANT, "--eval", type=PATH, help=".npz of model inputs (plus 'labels' for --metric accuracy) that "
                "--max-drop measures on; default: a quarter of --calib held out from calibration"),
    ]


def _target_options() -> list[click.Parameter]:
    """``--target-option`` and the named flags the targets declare on their options (``--palettize``)."""
    from edgec.targets.base import named_flags

    options: list[click.Parameter] = [_option(TARGET, "--target-option", multiple=True, metavar="KEY=VALUE",
                                              help="an option of the target (repeatable; 'edgec targets' lists them)")]
    for flag in named_flags():
        options.append(_option(TARGET, flag.flag, flag.dest, multiple=True, metavar=flag.metavar,
                               type=click.Choice(flag.choices) if flag.choices else None,
                               help=f"{'/'.join(flag.targets)}: {flag.help} (= --target-option {flag.key}=...)"))
    return options


def _matrix_options() -> list[click.Parameter]:
    return [
        _option(MATRIX, "--jobs", type=int, metavar="N", help="build the cells of a matrix in N worker processes; default 1"),
        _option(MATRIX, "--executor", type=click.Choice(["local", "ray"]),
                help="where the cells run: local (this machine, --jobs processes; default) or ray (a Ray task per "
                     "cell; pip install 'edgec[ray]')"),
        _option(MATRIX, "--address", metavar="ADDR",
                help="with --executor ray: the Ray cluster (HOST:6379 after 'ray start --head', or ray://HOST:10001); "
                     "default $RAY_ADDRESS, else a new local Ray instance"),
        _option(MATRIX, "--cache-store", metavar="URL",
                help="with --executor ray: a stage cache shared by the driver and every worker, in a store "
                     "(s3://, gs://, az://, file://); default $EDGEC_CACHE_STORE"),
    ]


def _cache_options() -> list[click.Parameter]:
    return [
        _flag(CACHE, "--no-cache", help="do not read or write the stage cache"),
        _option(CACHE, "--cache-dir", type=PATH, help="stage cache directory; default $EDGEC_CACHE_DIR or ~/.cache/edgec"),
        _flag(CACHE, "-v", "--verbose", help="progress messages even when not on a terminal"),
        _flag(CACHE, "-q", "--quiet", help="no progress messages"),
    ]
