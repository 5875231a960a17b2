"""Build configuration: validated once at the boundary (the CLI), then passed inward frozen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SerializeAsAny, field_validator, model_validator

from edgec.compiler import metrics
from edgec.compiler.dynamic_dims import InputShape, parse_dim
from edgec.compiler.synthetic import DEFAULT_INPUT_MAX_MB
from edgec.core.errors import ConfigError
from edgec.targets.base import target_options
from edgec.targets.options import TargetOptions

Precision = Literal["fp32", "fp16", "int8"]


class BuildConfig(BaseModel):
    """Everything ``edgec build`` needs.

    Args:
        source: model path or ``module:factory``.
        target: registered target name.
        precision: fp32, fp16 or int8.
        out: directory that receives ``<name>-<target>-<precision>/``.
        name: bundle name; defaults to the source's stem.
        calib: calibration data path.
        calib_samples: deterministic subset size.
        calib_method: minmax, entropy or percentile.
        calib_preprocess: image preprocessing spec (see :class:`ImagePreprocess`).
        calib_max_mb: bound, in MiB, on what the calibration (and ``eval``) readers may decode, checked
            against headers and declared sizes before anything is inflated.
        input_shapes: ``--input`` shapes by input name: per dim a size, a :class:`DimRange` or None (``?``). Targets
            that keep dynamic shapes (``Target.dynamic_shapes``) take them as the data's sizes only; others fix the
            sizes in the graph (see :mod:`edgec.compiler.dynamic_dims`).
        input_max_mb: bound, in MiB, on one synthetic golden sample (all inputs together), checked before allocating.
        input_values: inputs set to one value in every golden and calibration sample (``--input-value NAME=VALUE``;
            see :mod:`edgec.compiler.input_values`).
        fold_input_values: write ``input_values`` into the graph as constants; the bundle no longer takes them.
        int8_mode: auto, static or dynamic.
        simplify: run the graph clean-up pass.
        golden_samples: how many golden inputs parity is measured on (the bundle carries those that fit
            ``golden_max_mb``).
        golden_max_mb: cap, in MiB, on the bundle's ``golden.npz``; None: 25% of the model or 1 MiB, whichever
            is larger (see :mod:`edgec.compiler.golden_size`).
        min_cosine: fail the build when any output's cosine to the reference is lower.
        allow_degraded: write a bundle whose parity collapsed (see :func:`edgec.compiler.parity.collapsed`),
            which otherwise fails the build with exit 7.
        prune: fraction of channels (structured) or weights (unstructured) to remove; PyTorch sources only.
        prune_mode: structured or unstructured.
        finetune: ``module:function`` taking and returning the pruned ``nn.Module``.
        target_options: the target's typed options (its ``Options`` model), or ``(key, value)`` text pairs
            (``--target-option KEY=VALUE``, named flags) that are turned into them here, before anything is
            imported; see ``edgec targets``.
        report_layers: write a per-layer divergence report (``layers.json``) into the bundle.
        max_drop: accuracy budget: keep the most sensitive layers in float until the drop is within it.
        metric: what ``max_drop`` measures (:mod:`edgec.compiler.metrics`): top1 or decision agreement or
            cosine with FP32, accuracy on ``eval``, or ``pkg.module:function``.
        metric_reduce: how per-sample scores are reduced: mean, min (the worst sample) or pN (a percentile).
        threshold: the decision threshold of ``metric="decision"``.
        eval: a ``.npz`` of model inputs (plus ``labels`` for the accuracy metric) that ``max_drop`` measures
            on; without it, calibration samples held out from calibration.
        max_float_layers: at most this many layers kept in float by ``max_drop`` (default 16).
        max_builds: at most this many candidates built by ``max_drop`` (default 8).
        force: replace an existing bundle directory.
        cache: use the stage cache.
        cache_dir: where the stage cache lives.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    target: str = "onnx"
    precision: Precision = "fp32"
    out: Path = Path("bundles")
    name: str | None = None
    calib: Path | None = None
    calib_samples: int | None = None
    calib_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calib_preprocess: str | None = None
    calib_max_mb: int = 2048
    input_shapes: dict[str, InputShape] = {}
    input_max_mb: int = DEFAULT_INPUT_MAX_MB
    input_values: dict[str, int | float] = {}
    fold_input_values: bool = False
    int8_mode: Literal["auto", "static", "dynamic"] = "auto"
    simplify: bool = True
    golden_samples: int = 8
    golden_max_mb: float | None = None
    min_cosine: float | None = None
    allow_degraded: bool = False
    prune: float | None = None
    prune_mode: Literal["structured", "unstructured"] = "structured"
    finetune: str | None = None
    target_options: SerializeAsAny[TargetOptions] = TargetOptions()
    report_layers: bool = False
    max_drop: float | None = None
    metric: str = "top1"
    metric_reduce: str = "mean"
    threshold: float = 0.5
    max_float_layers: int | None = None
    max_builds: int | None = None
    eval: Path | None = None
    force: bool = False
    cache: bool = True
    cache_dir: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _typed_target_options(cls, data: Any) -> Any:
        """Text pairs (or a recipe's model) -> the target's ``Options``; raises :class:`ConfigError` as is."""
        if isinstance(data, dict):
            data = {**data, "target_options": target_options(str(data.get("target", "onnx")), data.get("target_options"))}
        return data

    @field_validator("out", "calib", "eval", "cache_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Paths are absolute from here on: converters run in workers with another working directory."""
        return None if value is None else absolute_path(value)

    @field_validator("source")
    @classmethod
    def _absolute_source(cls, value: str) -> str:
        return absolute_source(value)

    @field_validator("golden_max_mb")
    @classmethod
    def _golden_cap(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value < 1 << 20:
            raise ValueError("must be a positive number of MiB, e.g. 4")
        return value

    @field_validator("prune")
    @classmethod
    def _ratio(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value < 1:
            raise ValueError("must be a fraction between 0 and 1, e.g. 0.3")
        return value

    @model_validator(mode="after")
    def _finetune_needs_prune(self) -> BuildConfig:
        if self.finetune is not None and self.prune is None:
            raise ValueError("--finetune runs after pruning; give --prune RATIO too")
        return self

    @model_validator(mode="after")
    def _fold_needs_values(self) -> BuildConfig:
        if self.fold_input_values and not self.input_values:
            raise ValueError("--fold-input-values folds the values given with --input-value NAME=VALUE; give at least one")
        return self

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        return metrics.check_name(value)

    @field_validator("metric_reduce")
    @classmethod
    def _reduce(cls, value: str) -> str:
        return metrics.check_reduce(value)

    @field_validator("max_float_layers")
    @classmethod
    def _float_layers(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError("must be 0 or more")
        return value

    @field_validator("max_builds")
    @classmethod
    def _builds(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("must be at least 1 (the all-quantized candidate)")
        return value

    @field_validator("max_drop")
    @classmethod
    def _budget(cls, value: float | None) -> float | None:
        if value is not None and not 0 <= value < 1:
            raise ValueError("must be a fraction in [0, 1), e.g. 0.01 for one point")
        return value

    @field_validator("golden_samples", "input_max_mb", "calib_max_mb")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or value.startswith(".")):
            raise ValueError("must be a plain file name")
        return value


def absolute_path(path: Path | str) -> Path:
    """``path`` with ``~`` expanded, made absolute against the current directory and normalised (symlinks kept:
    a bundle written through a link stays where the user pointed)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def absolute_source(source: str) -> str:
    """A model source with its file part absolute: ``model.onnx``, ``saved_model_dir``, ``net.py:make``
    (``file.py:function``). A dotted ``package.module:factory`` and a path that does not exist stay as given
    (the importer then says what it expected)."""
    head, sep, func = source.rpartition(":")
    if sep and func.isidentifier() and head.endswith(".py"):
        return f"{absolute_path(head)}:{func}" if Path(head).expanduser().is_file() else source
    path = Path(source).expanduser()
    return str(absolute_path(path)) if path.exists() else source


def parse_target_option(text: str) -> tuple[str, str]:
    """Parse ``KEY=VALUE``.

    Raises:
        ConfigError: no ``=`` or an empty key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"bad --target-option {text!r}; expected KEY=VALUE")
    return key.strip().replace("-", "_"), value.strip()


def parse_input_value(text: str) -> tuple[str, int | float]:
    """Parse ``NAME=VALUE`` (a number) into ``("NAME", VALUE)``: an int when the text is one, else a float.

    Raises:
        ConfigError: no ``=``, an empty name, or a value that is not a finite number.
    """
    name, sep, raw = text.rpartition("=")
    value: int | float | None
    try:
        value = int(raw)
    except ValueError:
        try:
            value = float(raw)
        except ValueError:
            value = None
    if not sep or not name.strip() or value is None or value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"bad --input-value {text!r}; expected NAME=NUMBER, e.g. sample_rate=16000")
    return name.strip(), value


def parse_input_shape(text: str) -> tuple[str, InputShape]:
    """Parse ``NAME:1x3x32x32`` into ``("NAME", (1, 3, 32, 32))``; a dim may also be ``?`` (dynamic, None),
    a range ``[32..640]`` or a size in a range ``320[32..640]`` (:class:`DimRange`; see
    :mod:`edgec.compiler.dynamic_dims`).

    Raises:
        ConfigError: when the text is not of that form, a dim or bound is not in ``[1, 2^63)``, a range is
            empty or a size lies outside its range.
    """
    name, sep, dims = text.rpartition(":")
    try:
        shape = tuple(parse_dim(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape:
        raise ConfigError(f"bad --input {text!r}; expected NAME:DIMxDIM... with whole dims from 1 to 2^63-1, ? for a "
                          "dynamic dim, or a range [LOW..HIGH] (optionally after a size, 320[32..640]), "
                          "e.g. input:1x3x224x224 or x:1x3x48x[32..640]")
    return name, shape
