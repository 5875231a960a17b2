"""Names that become parts of store keys: device ids (``reports/<id>.json``) and channel names
(``channels/<name>.json``). Standard library only: the device agent imports it.

A name starts with a letter or digit and continues with letters, digits, ``.``, ``_`` and ``-``; it never
holds ``..``. So it can never add a ``/`` segment, climb out of its folder, or hide as a dot file.
"""

from __future__ import annotations

import re

from edgec.core.errors import ConfigError

CHANNEL_RULE = "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
"""Channel names: up to 64 characters."""
DEVICE_ID_RULE = "[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
"""Device ids: up to 128 characters (room for ``serve-<hostname>``)."""


def is_safe_name(value: object, rule: str = CHANNEL_RULE) -> bool:
    """True when ``value`` is a string that matches ``rule`` completely and holds no ``..``."""
    return isinstance(value, str) and re.fullmatch(rule, value, flags=re.ASCII) is not None and ".." not in value


def check_name(kind: str, value: object, rule: str = CHANNEL_RULE, flag: str | None = None) -> str:
    """``value`` if it is a safe name under ``rule``.

    Args:
        kind: what the name is, for the message (``channel name``, ``device id``).
        value: the name.
        rule: :data:`CHANNEL_RULE` or :data:`DEVICE_ID_RULE`.
        flag: the command-line flag it came from, if any, for the message.

    Raises:
        ConfigError: naming the flag and the allowed pattern.
    """
    if not is_safe_name(value, rule):
        text = str(value)
        shown = repr(value) if len(text) <= 80 else repr(text[:80]) + "..."
        raise ConfigError(f"bad {kind} {shown}{f' ({flag})' if flag else ''}: expected {rule} "
                          "(letters, digits, '.', '_', '-'; no '..')")
    return str(value)


def check_channel(value: object, flag: str | None = "--channel") -> str:
    """A channel name (see :func:`check_name`).

    Raises:
        ConfigError: not a safe channel name.
    """
    return check_name("channel name", value, CHANNEL_RULE, flag)


def check_device_id(value: object, flag: str | None = "--device-id") -> str:
    """A device id (see :func:`check_name`).

    Raises:
        ConfigError: not a safe device id.
    """
    return check_name("device id", value, DEVICE_ID_RULE, flag)
