"""``edgec cache info|prune``: what the stage cache holds, and removing what is least recently used.

Examples::

    edgec cache info                          # location, entries and size by stage (import, pass, reference, export)
    edgec cache info --json
    edgec cache prune --older-than 7d         # entries not used for a week
    edgec cache prune --max-size 1G           # least recently used entries until at most 1 GiB remains

A build touches every entry it reuses, so pruning removes what no recent build needed. Pruning is safe while
builds run: entries being written are never touched, an entry is renamed away before it is deleted (a
build then sees a miss and rebuilds it), and entries used in the last hour are kept (a running build may
still read them). See :mod:`edgec.compiler.cache`.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

import click

from edgec.compiler import cache
from edgec.core.cli_kit import ArgType, Group, Option, command
from edgec.core.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` (or plain seconds) -> seconds.

    Raises:
        argparse.ArgumentTypeError: anything else (the CLI turns it into a one-line config error).
    """
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw]?)", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; expected a number with s, m, h, d or w, e.g. 7d")
    return float(match[1]) * DURATION_UNITS[match[2] or "s"]


def parse_size(text: str) -> int:
    """``500M``, ``1G``, ``1.5GiB``, ``100k`` (binary multiples) or plain bytes -> bytes.

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; expected bytes or a number with K, M, G or T, e.g. 1G")
    return int(float(match[1]) * SIZE_UNITS[match[2]])


def human_size(size: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def commands() -> list[click.Command]:
    """``edgec cache`` with its actions ``info`` and ``prune``."""
    group = Group("cache", dest="cache_action", required=None, callback=_needs_action, description=__doc__,
                  help="show the stage cache, or prune it (least recently used first)")
    cache_dir = Option("--cache-dir", type=click.Path(path_type=Path),
                       help="the cache; default $EDGEC_CACHE_DIR or ~/.cache/edgec")
    group.add_command(command("info", cmd_cache, [Option("--json", is_flag=True, help="print the summary as JSON"),
                                                  cache_dir], help="location, entries and size by stage"))
    prune = [Option("--older-than", type=ArgType(parse_duration, "duration"), metavar="AGE",
                    help="delete entries no build used for AGE (e.g. 12h, 7d, 2w)"),
             Option("--max-size", type=ArgType(parse_size, "size"), metavar="SIZE",
                    help="then delete least recently used entries until at most SIZE remains (e.g. 500M, 1G)"),
             Option("--json", is_flag=True, help="print what was removed and kept as JSON"), cache_dir]
    group.add_command(command("prune", cmd_cache, prune,
                              help="delete entries unused for a while, or the least recently used above a size",
                              description="Entries used in the last hour are kept (a running build may still read "
                                          "them); entries being written are never touched."))
    return [group]


def _needs_action() -> None:
    """``edgec cache`` without an action.

    Raises:
        ConfigError: always, when no action follows.
    """
    if click.get_current_context().invoked_subcommand is None:
        raise ConfigError("edgec cache needs an action: info or prune (see 'edgec cache --help')")


def cmd_cache(args: argparse.Namespace) -> int:
    """``edgec cache ACTION``.

    Raises:
        ConfigError: ``prune`` without a limit, or a cache folder that is a file.
    """
    root = args.cache_dir or cache.default_cache_dir()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"cache {root} is not a directory; expected the stage cache folder")
    return _info(root, args.json) if args.cache_action == "info" else _prune(root, args)


def _info(root: Path, as_json: bool) -> int:
    found = cache.scan(root)
    if as_json:
        print(json.dumps(found.to_json(), indent=2, sort_keys=True))
        return 0
    print(f"cache {root}: {len(found.entries)} entries, {human_size(found.size)}")
    for kind, row in found.by_kind().items():
        print(f"  {kind:10s} {row['entries']:6d} entries  {human_size(row['bytes']):>10s}")
    if found.partial:
        print(f"  {len(found.partial)} partial folders (being written by a build, or left by a killed one)")
    return 0


def _prune(root: Path, args: argparse.Namespace) -> int:
    if args.older_than is None and args.max_size is None:
        raise ConfigError("edgec cache prune needs --older-than AGE or --max-size SIZE (or both)")
    result = cache.prune(root, args.older_than, args.max_size)
    if args.json:
        print(json.dumps({"path": str(root), "removed": result.removed, "freed_bytes": result.freed, "kept": result.kept,
                          "kept_bytes": result.kept_bytes, "kept_in_use": result.in_use}, indent=2, sort_keys=True))
        return 0
    print(f"removed {result.removed} entries ({human_size(result.freed)}) from {root}; "
          f"{result.kept} entries ({human_size(result.kept_bytes)}) remain")
    if result.in_use:
        print(f"  kept {result.in_use} entries over the limit that builds used in the last hour "
              f"(a running build may still read them)")
    return 0
