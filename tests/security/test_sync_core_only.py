"""With only edgec's core installed (no ``sync`` extra), every sync command names the extra to install
(exit 3, one line) instead of crashing with ``ModuleNotFoundError: securesystemslib`` (issue 16)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.core_only import HIDDEN, PRELUDE

SYNC_PACKAGES = ["securesystemslib", "tuf", "obstore", "cryptography"]

RUNNER = """
import contextlib, io, json, sys
from edgec.compiler.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results.append([argv[:2], code, err.getvalue()])
print(json.dumps(results))
"""


def run_without(hidden: list[str], commands: list[list[str]]) -> list[tuple[list[str], int, str]]:
    """Run each ``edgec`` command in one interpreter where the ``hidden`` packages cannot be imported."""
    prelude = PRELUDE.replace(f"HIDDEN = {HIDDEN!r}", f"HIDDEN = {hidden!r}")
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(RUNNER), json.dumps(commands)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [(argv, code, err) for argv, code, err in json.loads(proc.stdout)]


def sync_commands(tmp_path: Path) -> list[list[str]]:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    (tmp_path / "root.json").write_text("{}")
    store, keys = str(tmp_path / "store"), str(tmp_path / "keys")
    signed = ["--store", store, "--keys", keys]
    return [["keys", "init", "--keys", keys], ["keys", "init", "--keys", keys, "--store", store],
            ["keys", "rotate", "--role", "timestamp", *signed],
            ["publish", str(bundle), "--channel", "stable", *signed],
            ["release", "refresh", *signed], ["release", "promote", "--channel", "stable", *signed],
            ["release", "rollback", "--channel", "stable", *signed], ["release", "list", "--store", store],
            ["rollout", "set", "--channel", "stable", "--percent", "5", *signed],
            ["rollout", "check", "--channel", "stable", *signed], ["fleet", "status", "--store", store],
            ["agent", "--store", store, "--device-id", "dev-1", "--root", str(tmp_path / "device"),
             "--trusted-root", str(tmp_path / "root.json")]]


def test_every_sync_command_without_the_sync_extra_names_it_and_writes_nothing(tmp_path: Path) -> None:
    results = run_without(SYNC_PACKAGES, sync_commands(tmp_path))
    for argv, code, err in results:
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 3 and len(lines) == 1, (argv, code, err)
        assert "missing dependency" in lines[0] and "pip install 'edgec[sync]'" in lines[0], (argv, err)
    assert not (tmp_path / "keys").exists() and not (tmp_path / "store").exists()
    assert not (tmp_path / "device").exists()


def test_each_missing_sync_package_alone_is_named(tmp_path: Path) -> None:
    commands = sync_commands(tmp_path)
    keys_init, publish = commands[1], commands[3]
    for package in SYNC_PACKAGES:
        for argv, code, err in run_without([package], [keys_init, publish]):
            assert code == 3 and f"'{package}'" in err and "pip install 'edgec[sync]'" in err, (package, argv, err)


def test_standalone_device_agent_without_tuf_names_the_extra_and_touches_nothing(tmp_path: Path) -> None:
    (tmp_path / "root.json").write_text("{}")
    prelude = PRELUDE.replace(f"HIDDEN = {HIDDEN!r}", "HIDDEN = ['tuf', 'securesystemslib']")
    code = prelude + "from edgec.cloud_sync.agent import main\nsys.exit(main())\n"
    proc = subprocess.run([sys.executable, "-c", code, "--store", str(tmp_path / "store"), "--device-id", "dev-1",
                           "--root", str(tmp_path / "device"), "--trusted-root", str(tmp_path / "root.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "pip install 'edgec[sync]'" in proc.stderr and "'tuf'" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists() and not (tmp_path / "device").exists()
