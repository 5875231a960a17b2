"""Build configuration: validated once at the boundary (the CLI), then passed inward frozen."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from edgec.compiler.synthetic import DEFAULT_INPUT_MAX_MB
from edgec.core.errors import ConfigError

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
        input_shapes: fixed sizes for dynamic inputs.
        input_max_mb: bound, in MiB, on one synthetic golden sample (all inputs together), checked before allocating.
        int8_mode: auto, static or dynamic.
        simplify: run the graph clean-up pass.
        golden_samples: how many golden inputs the bundle carries.
        min_cosine: fail the build when any output's cosine to the reference is lower.
        prune: fraction of channels (structured) or weights (unstructured) to remove; PyTorch sources only.
        prune_mode: structured or unstructured.
        finetune: ``module:function`` taking and returning the pruned ``nn.Module``.
        target_options: ``(key, value)`` pairs read by the target (see ``edgec targets``).
        report_layers: write a per-layer divergence report (``layers.json``) into the bundle.
        max_drop: accuracy budget: keep the most sensitive layers in float until the drop is within it.
        metric: what ``max_drop`` measures: top1 agreement or cosine with FP32, or accuracy on ``eval``.
        eval: a ``.npz`` of model inputs plus ``labels`` for the accuracy metric.
        max_float_layers: at most this many layers kept in float by ``max_drop`` (default 16).
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
    input_shapes: dict[str, tuple[int, ...]] = {}
    input_max_mb: int = DEFAULT_INPUT_MAX_MB
    int8_mode: Literal["auto", "static", "dynamic"] = "auto"
    simplify: bool = True
    golden_samples: int = 8
    min_cosine: float | None = None
    prune: float | None = None
    prune_mode: Literal["structured", "unstructured"] = "structured"
    finetune: str | None = None
    target_options: tuple[tuple[str, str], ...] = ()
    report_layers: bool = False
    max_drop: float | None = None
    metric: Literal["top1", "cosine", "accuracy"] = "top1"
    max_float_layers: int | None = None
    eval: Path | None = None
    force: bool = False
    cache: bool = True
    cache_dir: Path | None = None

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


def parse_target_option(text: str) -> tuple[str, str]:
    """Parse ``KEY=VALUE``.

    Raises:
        ConfigError: no ``=`` or an empty key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"bad --target-option {text!r}; expected KEY=VALUE")
    return key.strip().replace("-", "_"), value.strip()


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME:1x3x32x32`` into ``("NAME", (1, 3, 32, 32))``.

    Raises:
        ConfigError: when the text is not of that form, or a dim is not in ``[1, 2^63)``.
    """
    name, sep, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(not 1 <= d < 2**63 for d in shape):
        raise ConfigError(f"bad --input {text!r}; expected NAME:DIMxDIM... with whole dims from 1 to 2^63-1, e.g. input:1x3x224x224")
    return name, shape
