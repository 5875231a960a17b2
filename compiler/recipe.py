"""Recipe files: the models, targets, precisions, options, gates, benchmark and release of a build in one file
(``edgec build -f edgec.yaml``), YAML or TOML. ``edgec recipe schema`` prints its JSON Schema.

Rules:
1. The file is validated whole (pydantic, unknown keys refused) before anything is imported; an error names
   the file, the key path (``models[0].calibration.samples``) and what was expected, in one line (exit 2).
2. Keys are kebab-case like the build's flags (``min-cosine`` is ``--min-cosine``); the keys under
   ``options.<target>`` are that target's options as ``edgec targets`` lists them (its typed ``Options``).
3. Relative paths (sources, calibration and eval data, ``out``, bench ``out``, ``keys``, a local store) are
   relative to the recipe's folder, so a recipe builds the same from any working directory.
4. Each model builds the recipe's ``targets`` x ``precisions`` (or its own lists). ``options`` and ``gates``
   apply to every model; a model's own ``options.<target>`` or ``gates`` replace them for that model. The
   gates that compare with fp32 (``max-drop``, ``require-speedup``) apply to the quantized cells only.
5. ``bench`` runs ``edgec bench`` on the bundles built and ``publish`` runs ``edgec publish`` on each into
   its channel (``{name}``, ``{target}`` and ``{precision}`` are filled in per bundle; two bundles never share
   a channel), only when every cell was built.
6. A recipe is code: a source may name a Python factory, which the build calls. Build only recipes you trust.
"""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from edgec.compiler.config import BuildConfig, Precision, parse_input_shape
from edgec.core.errors import ConfigError, EdgecError, MissingDependencyError
from edgec.targets.base import TARGETS
from edgec.targets.options import TargetOptions

SUFFIXES = {".yaml": "YAML", ".yml": "YAML", ".toml": "TOML"}
CHANNEL_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A channel name, as the release store takes it (see ``edgec.cloud_sync.names``)."""
CHANNEL_FIELDS = ("name", "target", "precision")


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class Section(BaseModel):
    """A part of a recipe: frozen, kebab-case keys, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=_kebab)


class Calibration(Section):
    """Calibration data for int8 (``--calib`` and its flags)."""

    data: Path = Field(description="an .npz, a folder of .npy/.npz files, or a folder of images")
    samples: int | None = Field(None, ge=1, description="use a deterministic subset of this many samples")
    method: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="how ranges are calibrated")
    preprocess: str | None = Field(None, description="for image folders: resize=HxW,mean=a/b/c,std=a/b/c,scale=255,"
                                                     "layout=nchw|nhwc,mode=rgb|l")
    max_mb: int = Field(2048, ge=1, description="refuse data that would decode to more than this many MiB")

    @field_validator("preprocess")
    @classmethod
    def _preprocess(cls, value: str | None) -> str | None:
        from edgec.calibration.readers import ImagePreprocess

        if value is not None:
            try:
                ImagePreprocess.parse(value)
            except ConfigError as exc:
                raise ValueError(exc.message.replace("--calib-preprocess ", "")) from None
        return value


class Evaluation(Section):
    """Held-out data with labels: what ``max-drop`` measures and ``bench`` reports accuracy on."""

    data: Path = Field(description="an .npz of model inputs plus an integer 'labels' array")
    metric: str = Field("accuracy", description="what max-drop measures: accuracy, top1 (agreement with fp32) or cosine")


class Gates(Section):
    """Checks a cell must pass for its bundle to be written."""

    min_cosine: float | None = Field(None, ge=-1, le=1, description="every output's cosine to the FP32 reference at least this")
    max_drop: float | None = Field(None, ge=0, lt=1, description="quantized cells: keep the most sensitive layers in "
                                                                   "float until the metric drops by at most this")
    max_float_layers: int | None = Field(None, ge=1, description="with max-drop: keep at most this many layers in float")
    require_speedup: float | None = Field(None, gt=0, description="quantized cells: p50 latency on this host must beat the "
                                                                   "fp32 bundle's by more than this factor")


class Bench(Section):
    """``edgec bench`` on every bundle built (with the model's eval data for accuracy)."""

    runs: int = Field(100, ge=1, description="timed inferences per bundle")
    warmup: int = Field(10, ge=0, description="untimed inferences first")
    repeats: int = Field(3, ge=1, description="rounds the timed runs are split into")
    threads: int | None = Field(None, ge=1, description="runtime threads; default: the runtime decides")
    out: Path | None = Field(None, description="folder for bench.json, bench.md and bench.html; default OUT/report")


class Publish(Section):
    """``edgec publish`` of each bundle built into a channel of a release store."""

    store: str = Field(description="a directory, file://, s3://, gs:// or az:// URL")
    keys: Path = Field(description="the publisher's keys folder ('edgec keys init --keys DIR')")
    channel: str = Field(description="channel name; {name}, {target} and {precision} are filled in per bundle")
    percent: float = Field(100.0, ge=0, le=100, description="a later release rolls out to this percentage first")

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        try:
            filled = value.format(**{k: "x" for k in CHANNEL_FIELDS})
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"{value!r} has a placeholder other than {{name}}, {{target}} or {{precision}}") from None
        if not CHANNEL_RULE.fullmatch(filled) or ".." in filled:
            raise ValueError(f"{value!r} is not a channel name: expected {CHANNEL_RULE.pattern} (no '..')")
        return value


class OptionTable(BaseModel):
    """Per target (by name), its typed options; :func:`recipe_model` gives it one field per registered target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def get(self, target: str) -> TargetOptions | None:
        """The options given for ``target``, or None."""
        value = getattr(self, target, None)
        return value if isinstance(value, TargetOptions) else None


def _unique(values: list[str] | None) -> list[str] | None:
    if values is not None:
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"lists {', '.join(twice)} more than once")
        if not values:
            raise ValueError("is empty; expected at least one entry")
    return values


class Model(Section):
    """One model to build."""

    source: str = Field(description="model.onnx, model.pt2, a SavedModel folder, path/to/file.py:factory or "
                                    "package.module:factory")
    name: str | None = Field(None, description="bundle name; default: the source's file or module name")
    inputs: dict[str, str] = Field({}, description="fixed sizes for dynamic inputs, NAME: 1x3x224x224")
    calibration: Calibration | None = Field(None, description="calibration data (int8); without it, golden inputs are drawn")
    eval: Evaluation | None = Field(None, description="held-out data with labels for max-drop and bench")
    targets: list[str] | None = Field(None, description="this model's targets instead of the recipe's")
    precisions: list[Precision] | None = Field(None, description="this model's precisions instead of the recipe's")
    options: OptionTable | None = Field(None, description="per target: options replacing the recipe's for this model")
    gates: Gates | None = Field(None, description="gates replacing the recipe's for this model")
    int8_mode: Literal["auto", "static", "dynamic"] = Field("auto", description="INT8 quantization: auto, static or dynamic")
    golden_samples: int = Field(8, ge=1, description="golden inputs stored in each bundle")

    @field_validator("targets", "precisions")
    @classmethod
    def _lists(cls, value: list[str] | None) -> list[str] | None:
        return _unique(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or value.startswith(".")):
            raise ValueError("must be a plain file name")
        return value

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: dict[str, str]) -> dict[str, str]:
        for name, dims in value.items():
            try:
                parse_input_shape(f"{name}:{dims}")
            except ConfigError:
                raise ValueError(f"{name}: {dims!r} is not DIMxDIM... with whole dims, e.g. 1x3x224x224") from None
        return value


class Recipe(Section):
    """A recipe file (see the module docstring)."""

    version: Literal[1] = Field(1, description="the recipe format's version")
    out: Path = Field(Path("bundles"), description="where bundles go")
    targets: list[str] = Field(["onnx"], description="targets of every model ('edgec targets' lists them)")
    precisions: list[Precision] = Field(["fp32"], description="precisions of every target")
    options: OptionTable = Field(default_factory=OptionTable, description="per target: its options")
    gates: Gates = Field(default_factory=lambda: Gates.model_validate({}), description="gates of every model")
    models: list[Model] = Field(min_length=1, description="the models to build")
    bench: Bench | None = Field(None, description="edgec bench on the bundles once every cell was built")
    publish: Publish | None = Field(None, description="edgec publish of each bundle once every cell was built")
    jobs: int = Field(1, ge=1, description="worker processes building cells in parallel")
    force: bool = Field(False, description="replace existing bundles")
    executor: Literal["local", "ray"] = Field("local", description="where cells run: local (this machine, jobs "
                                              "processes) or ray (a Ray task per cell; pip install 'edgec[ray]')")
    address: str | None = Field(None, description="with executor ray: the Ray cluster (HOST:6379 or ray://HOST:10001); "
                                                  "default $RAY_ADDRESS, else a new local Ray instance")
    out_store: str | None = Field(None, description="with executor ray: a store URL (s3://, gs://, az://, file://) the "
                                                    "workers upload the bundles to, instead of out")
    cache_store: str | None = Field(None, description="with executor ray: a store URL holding the stage cache that the "
                                                      "driver and the workers share")

    @field_validator("targets", "precisions")
    @classmethod
    def _lists(cls, value: list[str]) -> list[str]:
        return _unique(value) or value

    @model_validator(mode="after")
    def _one_channel_per_bundle(self) -> Recipe:
        if self.publish is not None and not any(f"{{{k}}}" in self.publish.channel for k in CHANNEL_FIELDS):
            cells = sum(len(m.targets or self.targets) * len(m.precisions or self.precisions) for m in self.models)
            if cells > 1:
                raise ValueError(f"publish.channel {self.publish.channel!r} would receive {cells} bundles; put {{name}}, "
                                 "{target} and {precision} in it, or build one cell")
        return self


@functools.cache
def recipe_model() -> type[Recipe]:
    """:class:`Recipe` with the registered targets: their names as the allowed ``targets`` and one typed
    ``options`` field per target (its ``Options`` model), for validation and the JSON Schema."""
    names = tuple(TARGETS.names())
    target_name: Any = Literal[names]  # type: ignore[valid-type]
    fields: dict[str, Any] = {n: (TARGETS.get(n).Options | None, Field(None, description=f"options of the {n} target"))
                              for n in names}
    table = create_model("TargetOptionTable", __base__=OptionTable, **fields)
    optional_table: Any = table | None
    model = create_model("Model", __base__=Model, targets=(list[target_name] | None, Model.model_fields["targets"]),
                         options=(optional_table, Model.model_fields["options"]))
    return create_model("Recipe", __base__=Recipe, targets=(list[target_name], Recipe.model_fields["targets"]),
                        options=(table, Field(default_factory=table, description="per target: its options")),
                        models=(list[model], Recipe.model_fields["models"]))  # type: ignore[valid-type]


def schema() -> dict[str, Any]:
    """The JSON Schema of recipe files (``edgec recipe schema``)."""
    document = recipe_model().model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **document, "title": "edgec recipe"}


def read(path: Path) -> Recipe:
    """Read and validate a recipe file (rule 1).

    Raises:
        ConfigError: the file is missing or unreadable, not YAML/TOML, or does not validate; one line naming
            the file, the key path and what was expected.
        MissingDependencyError: pyyaml (or, before Python 3.11, tomli) is not installed.
    """
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"recipe {path}: expected a .yaml, .yml or .toml file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"recipe {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    data = _parse(path, text, kind)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys (models, targets, ...) at the top, got {type(data).__name__}")
    model = recipe_model()
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a typo explains a "missing"
        raise ConfigError(f"{path}: {describe(first, model)}") from None


def _parse(path: Path, text: str, kind: str) -> Any:
    if kind == "TOML":
        toml = _toml(path)
        try:
            return toml.loads(text)
        except toml.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {' '.join(str(exc).split())}") from None
    try:
        import yaml
    except ImportError:
        raise _missing("pyyaml", f"reading the YAML recipe {path}", "pip install pyyaml, or write the recipe as .toml") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {' '.join(str(problem).split())}") from None


def _toml(path: Path) -> Any:
    """``tomllib`` (Python 3.11+), else ``tomli``."""
    try:
        import tomllib

        return tomllib
    except ImportError:
        try:
            import tomli
        except ImportError:
            raise _missing("tomli", f"reading the TOML recipe {path} before Python 3.11",
                           "pip install tomli, or write the recipe as .yaml") from None
        return tomli


def _missing(package: str, purpose: str, hint: str) -> MissingDependencyError:
    error = MissingDependencyError(package, "", purpose)
    error.hint = hint
    return error


def describe(error: Any, root: type[BaseModel]) -> str:
    """One pydantic error as ``key.path[0].key: what was wrong; expected ...``."""
    loc = tuple(error["loc"])
    where = key_path(loc) or "(top level)"
    kind, got = error["type"], error.get("input")
    if kind == "extra_forbidden":
        allowed = _keys_at(root, loc[:-1])
        return (f"{key_path(loc[:-1]) or '(top level)'}: unknown key {loc[-1]!r}; "
                + (f"expected one of: {', '.join(allowed)}" if allowed else "it takes no keys"))
    info = _field_at(root, loc)
    expected = f" ({info.description})" if info is not None and info.description else ""
    if kind == "missing":
        return f"{where}: missing; expected a value{expected}"
    if kind == "too_short":
        return f"{where}: is empty; expected at least one entry{expected}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if not loc:  # a check across keys: its message names them
        return message
    if message.startswith("Input should be "):
        message = "expected " + message.removeprefix("Input should be ")
    shown = repr(got) if len(repr(got)) <= 80 else repr(got)[:77] + "..."
    return f"{where}: {message}, got {shown}" + (expected if "expected" not in message else "")


def key_path(loc: Sequence[Any]) -> str:
    """``("models", 0, "calibration")`` as ``models[0].calibration``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _walk(root: type[BaseModel], loc: Sequence[Any]) -> tuple[type[BaseModel] | None, Any]:
    """The model class at ``loc`` (None where it is not a model) and the field info of its last key."""
    current: type[BaseModel] | None = root
    info = None
    for part in (p for p in loc if not isinstance(p, int)):
        if current is None:
            return None, None
        info = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        current = _model_in(info.annotation) if info is not None else None
    return current, info


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The first pydantic model class in an annotation (``list[Model] | None`` -> ``Model``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_in, typing.get_args(annotation)) if m is not None), None)


def _keys_at(root: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    model, _ = _walk(root, loc)
    return sorted((f.alias or n) for n, f in model.model_fields.items()) if model is not None else []


def _field_at(root: type[BaseModel], loc: Sequence[Any]) -> Any:
    return _walk(root, loc)[1]


@dataclass(frozen=True)
class Built:
    """A recipe turned into builds: per model, its cells' configurations (table order), and the recipe."""

    path: Path
    recipe: Recipe
    models: tuple[tuple[BuildConfig, ...], ...]
    evals: tuple[Path | None, ...]
    """Per model, its eval data (what ``bench`` measures accuracy on)."""
    checks: tuple[tuple[float | None, ...], ...]
    """Per model, per cell: the ``require-speedup`` factor, or None."""

    def resolve(self, path: Path) -> Path:
        """``path`` relative to the recipe's folder (rule 3)."""
        return path if path.is_absolute() else self.path.parent / path

    def channel(self, name: str, target: str, precision: str) -> str:
        """The publish channel of one bundle."""
        assert self.recipe.publish is not None
        return self.recipe.publish.channel.format(name=name, target=target, precision=precision)


def configs(path: Path, recipe: Recipe, *, force: bool | None = None, cache: bool = True, cache_dir: Path | None = None,
            targets: Sequence[str] = (), precisions: Sequence[str] = ()) -> Built:
    """One :class:`BuildConfig` per cell of each model (rules 3 and 4).

    Args:
        force: replace existing bundles; None: the recipe's ``force``.
        cache: use the stage cache; ``cache_dir``: where it is.
        targets: when given, only these of the recipe's targets (``edgec build -f R --target onnx``).
        precisions: when given, only these of the recipe's precisions.

    Raises:
        ConfigError: a filter names a target or precision the recipe does not build, or a cell's settings
            are refused; naming the file and the model.
    """
    base = path.parent
    models, evals, checks = [], [], []
    for index, model in enumerate(recipe.models):
        cells = _cells(recipe, model, targets, precisions)
        if not cells:
            continue
        where = f"{path}: models[{index}]"
        try:
            built = [_config(recipe, model, base, t, p, recipe.force if force is None else force, cache, cache_dir) for t, p in cells]
        except EdgecError as exc:
            raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from None
        gates = model.gates or recipe.gates
        models.append(tuple(built))
        evals.append(_resolve(base, model.eval.data) if model.eval else None)
        checks.append(tuple(gates.require_speedup if p != "fp32" else None for _, p in cells))
    _check_filters(path, recipe, targets, precisions)
    return Built(path, recipe, tuple(models), tuple(evals), tuple(checks))


def _cells(recipe: Recipe, model: Model, targets: Sequence[str], precisions: Sequence[str]) -> list[tuple[str, str]]:
    return [(t, p) for t in (model.targets or recipe.targets) for p in (model.precisions or recipe.precisions)
            if (not targets or t in targets) and (not precisions or p in precisions)]


def _check_filters(path: Path, recipe: Recipe, targets: Sequence[str], precisions: Sequence[str]) -> None:
    known_t = {t for m in recipe.models for t in (m.targets or recipe.targets)}
    known_p = {p for m in recipe.models for p in (m.precisions or recipe.precisions)}
    for flag, given, known in (("--target", targets, known_t), ("--precision", precisions, known_p)):
        unknown = [v for v in given if v not in known]
        if unknown:
            raise ConfigError(f"{flag} {','.join(unknown)}: {path} builds {', '.join(sorted(known))}; "
                              f"{flag} picks among them")


def _config(recipe: Recipe, model: Model, base: Path, target: str, precision: str, force: bool, cache: bool,
            cache_dir: Path | None) -> BuildConfig:
    gates = model.gates or recipe.gates
    quantized = precision != "fp32"
    calib = model.calibration
    options = (model.options.get(target) if model.options is not None else None) or recipe.options.get(target)
    fields: dict[str, Any] = {
        "source": _source(base, model.source), "target": target, "precision": precision, "out": _resolve(base, recipe.out),
        "name": model.name, "input_shapes": dict(parse_input_shape(f"{k}:{v}") for k, v in model.inputs.items()),
        "int8_mode": model.int8_mode, "golden_samples": model.golden_samples, "min_cosine": gates.min_cosine,
        "max_drop": gates.max_drop if quantized else None, "max_float_layers": gates.max_float_layers,
        "target_options": options, "force": force, "cache": cache, "cache_dir": cache_dir,
    }
    if calib is not None:
        fields.update(calib=_resolve(base, calib.data), calib_samples=calib.samples, calib_method=calib.method,
                      calib_preprocess=calib.preprocess, calib_max_mb=calib.max_mb)
    if model.eval is not None:
        fields.update(eval=_resolve(base, model.eval.data), metric=model.eval.metric)
    try:
        return BuildConfig(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{key_path(first['loc'])}: {str(first['msg']).removeprefix('Value error, ')}") from None


def _resolve(base: Path, path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else base / path


def _source(base: Path, source: str) -> str:
    """A source relative to the recipe's folder: a path or ``path/file.py:factory``; ``package.module:factory`` as is."""
    head, sep, func = source.rpartition(":")
    if sep and func.isidentifier() and head.endswith(".py"):
        return f"{_resolve(base, Path(head))}:{func}"
    if sep and func.isidentifier() and all(p.isidentifier() for p in head.split(".")):
        return source
    return str(_resolve(base, Path(source)))
