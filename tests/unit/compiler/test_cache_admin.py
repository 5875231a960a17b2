"""The stage cache's bookkeeping: hits touch entries, ``edgec cache info`` counts them by stage, and
``edgec cache prune`` removes the least recently used ones without ever breaking a build that runs beside it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from edgec.compiler import cache
from edgec.compiler.cache import META, StageCache
from tests.support.cli import cli

DAY = 86400.0


def _entry(store: StageCache, key: str, kind: str, size: int) -> Path:
    def produce(folder: Path) -> dict[str, Any]:
        (folder / "blob").write_bytes(b"x" * size)
        return {"size": size}

    return store.get_or_create(key * 8, produce, kind=kind)[0]


def _age(entry: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(entry / META, (then, then))


def test_a_hit_touches_the_entry_so_pruning_sees_its_last_use(tmp_path: Path) -> None:
    store = StageCache(tmp_path)
    entry = _entry(store, "aa", "pass", 10)
    _age(entry, 30 * DAY)
    _, meta, hit = store.get_or_create("aa" * 8, lambda folder: {"never": "called"})
    assert hit and meta == {"size": 10}
    assert time.time() - (entry / META).stat().st_mtime < 60


def test_a_failed_stage_leaves_no_entry_and_no_temporary_folder(tmp_path: Path) -> None:
    def broken(folder: Path) -> dict[str, Any]:
        (folder / "half").write_bytes(b"partial")
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError):
        StageCache(tmp_path).get_or_create("ab" * 8, broken, kind="export")
    assert cache.scan(tmp_path).entries == [] and cache.scan(tmp_path).partial == []


def test_info_counts_entries_and_bytes_by_stage(tmp_path: Path) -> None:
    store = StageCache(tmp_path)
    _entry(store, "a1", "pass", 1000)
    _entry(store, "a2", "pass", 2000)
    _entry(store, "b1", "export", 5000)
    info = cache.scan(tmp_path)
    stages = info.by_kind()
    assert stages["pass"]["entries"] == 2 and stages["export"]["entries"] == 1
    assert stages["pass"]["bytes"] >= 3000 and stages["export"]["bytes"] >= 5000
    assert info.size == sum(row["bytes"] for row in stages.values())


def test_prune_older_than_removes_only_entries_unused_for_that_long(tmp_path: Path) -> None:
    store = StageCache(tmp_path)
    old, recent = _entry(store, "c1", "pass", 100), _entry(store, "c2", "pass", 100)
    _age(old, 8 * DAY)
    _age(recent, 2 * DAY)
    result = cache.prune(tmp_path, older_than=7 * DAY)
    assert result.removed == 1 and result.kept == 1
    assert not old.exists() and recent.exists()


def test_prune_max_size_removes_least_recently_used_first(tmp_path: Path) -> None:
    store = StageCache(tmp_path)
    entries = [_entry(store, f"d{i}", "export", 1000) for i in range(4)]
    for i, entry in enumerate(entries):
        _age(entry, (10 - i) * DAY)  # d0 used longest ago
    assert store.get_or_create("d0" * 8, lambda folder: {})[2]  # a build reuses d0: now the most recently used
    _age(entries[0], 2 * 3600)  # ... two hours ago, so no build can still be reading it
    size = cache.scan(tmp_path).size
    result = cache.prune(tmp_path, max_size=size // 2)
    assert result.removed == 2 and result.kept_bytes <= size // 2
    assert [e.exists() for e in entries] == [True, False, False, True]


def test_prune_keeps_entries_used_in_the_last_hour_even_over_the_size(tmp_path: Path) -> None:
    store = StageCache(tmp_path)
    in_use = _entry(store, "e1", "reference", 1000)
    result = cache.prune(tmp_path, max_size=0)
    assert in_use.exists() and result.removed == 0 and result.in_use == 1


def test_prune_never_touches_an_entry_being_written_but_clears_a_day_old_one(tmp_path: Path) -> None:
    store = StageCache(tmp_path)
    seen: dict[str, Path] = {}

    def produce(folder: Path) -> dict[str, Any]:  # prune runs while this entry is being written
        (folder / "blob").write_bytes(b"y" * 100)
        cache.prune(tmp_path, older_than=0, in_use_s=0)
        seen["folder"] = folder
        assert (folder / "blob").exists()
        return {}

    entry, _, hit = store.get_or_create("f1" * 8, produce, kind="pass")
    assert not hit and (entry / "blob").read_bytes() == b"y" * 100
    debris = tmp_path / "f2" / ".f2f2f2f2f2f2-killed"
    debris.mkdir(parents=True)
    os.utime(debris, (time.time() - 2 * DAY,) * 2)
    cache.prune(tmp_path, older_than=30 * DAY)
    assert not debris.exists() and entry.exists()


def test_a_pruned_entry_is_a_miss_that_the_next_build_stores_again(tmp_path: Path) -> None:
    store = StageCache(tmp_path)
    entry = _entry(store, "g1", "pass", 100)
    _age(entry, 9 * DAY)
    cache.prune(tmp_path, older_than=7 * DAY)
    again, meta, hit = StageCache(tmp_path).get_or_create("g1" * 8, lambda folder: {"again": True})
    assert not hit and again == entry and meta == {"again": True}
    assert not list(entry.parent.glob(".trash-*"))


def test_cli_info_json_and_prune(tmp_path: Path) -> None:
    store = StageCache(tmp_path / "c")
    _age(_entry(store, "h1", "export", 3000), 10 * DAY)
    _entry(store, "h2", "pass", 100)
    code, out, err = cli("cache", "info", "--json", "--cache-dir", str(tmp_path / "c"))
    assert code == 0, err
    data = json.loads(out)
    assert data["entries"] == 2 and set(data["stages"]) == {"export", "pass"} and data["path"] == str(tmp_path / "c")
    code, out, _ = cli("cache", "info", "--cache-dir", str(tmp_path / "c"))
    assert code == 0 and "2 entries" in out and "export" in out
    code, out, err = cli("cache", "prune", "--older-than", "7d", "--json", "--cache-dir", str(tmp_path / "c"))
    assert code == 0, err
    assert json.loads(out)["removed"] == 1 and cache.scan(tmp_path / "c").by_kind().keys() == {"pass"}


@pytest.mark.parametrize(("args", "fragment"), [
    (("prune",), "needs --older-than AGE or --max-size SIZE"),
    (("prune", "--older-than", "7x"), "'7x' is not a duration"),
    (("prune", "--max-size", "lots"), "'lots' is not a size"),
    ((), "needs an action: info or prune"),
])
def test_cli_bad_cache_arguments_are_one_line_config_errors(tmp_path: Path, args: tuple[str, ...], fragment: str) -> None:
    code, _, err = cli("cache", *args, *(("--cache-dir", str(tmp_path)) if args else ()))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err


def test_durations_and_sizes_parse_with_units() -> None:
    from edgec.compiler.cache_cli import parse_duration, parse_size

    assert parse_duration("7d") == 7 * DAY and parse_duration("90") == 90 and parse_duration("1.5h") == 5400
    assert parse_size("1G") == 1 << 30 and parse_size("500MiB") == 500 << 20 and parse_size("123") == 123
