"""Typed target options: each target declares an ``Options`` model, built once at the edge.

``edgec build --target-option KEY=VALUE`` (and named flags such as ``--palettize``, which a target declares
on its option fields with :func:`option`) give ``(key, value)`` text pairs; :meth:`TargetOptions.from_pairs`
turns them into the target's frozen ``Options`` before anything is imported, so a bad option fails at once
with a one-line configuration error naming the option and what it takes. Recipes may build the model
directly (``TensorRTOptions(trt_profile={...})``). ``edgec targets`` and ``edgec build --help`` print the
options from the fields' descriptions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgec.core.errors import ConfigError

OptionsT = TypeVar("OptionsT", bound="TargetOptions")


def option(default: Any, description: str, *, flag: str | None = None, choices: tuple[str, ...] | None = None,
           metavar: str | None = None, repeatable: bool = False) -> Any:
    """A field of a target's ``Options``.

    Args:
        default: the value when the option is not given.
        description: one line for ``edgec targets`` and the error a bad value gets ("expected ...").
        flag: a named ``edgec build`` flag that fills this option (``--palettize``), if any.
        choices: the values the named flag offers (its ``--help`` and argparse check).
        metavar: how the named flag's value is shown in ``--help``.
        repeatable: every ``KEY=VALUE`` given is kept, in order (a list), instead of the last one.
    """
    extra: dict[str, Any] = {"flag": flag, "choices": list(choices) if choices else None, "metavar": metavar,
                             "repeatable": repeatable or None}
    return Field(default, description=description, json_schema_extra={k: v for k, v in extra.items() if v is not None})


@dataclass(frozen=True)
class NamedFlag:
    """An ``edgec build`` flag that fills one target option.

    Args:
        flag: the flag, e.g. ``--palettize``.
        key: the option it fills, e.g. ``palettize``.
        targets: the targets that read it.
        help: the option's description.
        choices: the values it takes, if restricted.
        metavar: its value's name in ``--help``.
        repeatable: whether it may be given more than once.
    """

    flag: str
    key: str
    targets: tuple[str, ...]
    help: str
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    repeatable: bool = False

    @property
    def dest(self) -> str:
        """The argparse attribute holding its values."""
        return "target_flag_" + self.flag.lstrip("-").replace("-", "_")


class TargetOptions(BaseModel):
    """Base of every target's ``Options``: frozen, unknown keys rejected, every field with a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_pairs(cls: type[OptionsT], pairs: Iterable[tuple[str, str]], target: str) -> OptionsT:
        """Build from ``KEY=VALUE`` text pairs; a repeatable option collects its values, others keep the last.

        Raises:
            ConfigError: an option the target does not have, or a value its field does not take.
        """
        data: dict[str, Any] = {}
        for key, value in pairs:
            if key not in cls.model_fields:
                accepted = ", ".join(sorted(cls.model_fields)) or "none"
                raise ConfigError(f"the {target} target has no option {key!r}; it accepts: {accepted}")
            if _extra(cls, key).get("repeatable"):
                data.setdefault(key, []).append(value)
            else:
                data[key] = value
        return cls.checked(target, **data)

    @classmethod
    def checked(cls: type[OptionsT], target: str, **values: Any) -> OptionsT:
        """Build from Python values (a recipe's), turning a validation failure into a one-line config error.

        Raises:
            ConfigError: naming the option, the value, what went wrong and what the option takes.
        """
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = str(first["loc"][0]) if first["loc"] else "?"
            given = values.get(key)
            shown = given[-1] if isinstance(given, list) and len(given) == 1 else given
            known = key in cls.model_fields
            expected = cls.model_fields[key].description if known else None
            flag = _extra(cls, key).get("flag") if known else None
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"bad {target} option {key}={shown!r}{f' ({flag})' if flag else ''}: {msg}"
                              + (f"; expected {expected}" if expected else "")) from None

    @classmethod
    def help_lines(cls) -> list[tuple[str, str]]:
        """``(key, description with its default and named flag)`` per option, sorted by key."""
        lines = []
        for key, info in sorted(cls.model_fields.items()):
            default = str(info.default).lower() if isinstance(info.default, bool) else info.default
            shown = f" (default {default})" if default not in (None, (), [], {}, "") else ""
            flag = _extra(cls, key).get("flag")
            lines.append((key, f"{info.description or ''}{shown}{f'; also {flag}' if flag else ''}"))
        return lines

    @classmethod
    def named_flags(cls, target: str) -> list[NamedFlag]:
        """The named ``edgec build`` flags this model's fields declare."""
        flags = []
        for key, info in cls.model_fields.items():
            extra = _extra(cls, key)
            if extra.get("flag"):
                choices = extra.get("choices")
                flags.append(NamedFlag(str(extra["flag"]), key, (target,), info.description or "",
                                       tuple(choices) if choices else None, extra.get("metavar"),
                                       bool(extra.get("repeatable"))))
        return flags

    def suffix(self) -> str:
        """Extra text for the bundle name when these options change the model beyond its precision (``-p4``)."""
        return ""


def _extra(cls: type[TargetOptions], key: str) -> dict[str, Any]:
    extra = cls.model_fields[key].json_schema_extra
    return extra if isinstance(extra, dict) else {}


def merge_flags(flags: Iterable[NamedFlag]) -> list[NamedFlag]:
    """One entry per flag, naming every target that declares it, in flag order.

    Raises:
        RuntimeError: two targets declare one flag for different option keys (a bug in a target).
    """
    merged: dict[str, NamedFlag] = {}
    for flag in flags:
        seen = merged.get(flag.flag)
        if seen is None:
            merged[flag.flag] = flag
            continue
        if seen.key != flag.key:
            raise RuntimeError(f"{flag.flag} fills {seen.key!r} for {seen.targets} and {flag.key!r} for {flag.targets}")
        merged[flag.flag] = NamedFlag(seen.flag, seen.key, seen.targets + flag.targets, seen.help, seen.choices,
                                      seen.metavar, seen.repeatable or flag.repeatable)
    return [merged[name] for name in sorted(merged)]
