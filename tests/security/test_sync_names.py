# ruff: noqa: F811 - the fixtures imported below are parameters of the tests
"""Device ids and channel names become parts of store keys (``reports/<id>.json``, ``channels/<name>.json``).

Before the hardening ``--channel ../x`` (agent, serve) and ``serve STORE --device-id a/b`` were accepted, and
the device then silently never found its channel or never reported. Every command refuses them at the edge
with one line naming the flag and the allowed pattern (exit 2), and the code that builds the keys refuses them
again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.core.errors import EXIT_CONFIG, ConfigError
from tests.support.cli import cli  # noqa: F401 - fixtures
from tests.support.sync_fixtures import key_template, keys  # noqa: F401 - fixtures

BAD_NAMES = ["../x", "a/b", "..", "a..b", "-x", ".hidden", "a b", "é", "x" * 200, ""]
PATTERN = "[A-Za-z0-9][A-Za-z0-9._-]"


def _assert_refused(code: int, err: str, flag: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_CONFIG and len(lines) == 1, (code, err)
    assert lines[0].startswith("edgec: config error: ") and flag in lines[0] and PATTERN in lines[0], lines[0]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_agent_refuses_a_channel_that_would_leave_its_store_key(tmp_path: Path, keys: Path, name: str) -> None:
    code, _, err = cli("agent", "--store", str(tmp_path / "store"), "--device-id", "dev-1", "--root", str(tmp_path / "dev"),
                       "--trusted-root", str(keys / "root.json"), f"--channel={name}")
    _assert_refused(code, err, "--channel")
    assert not (tmp_path / "dev").exists()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_agent_refuses_a_device_id_that_would_leave_its_report_key(tmp_path: Path, keys: Path, name: str) -> None:
    code, _, err = cli("agent", "--store", str(tmp_path / "store"), f"--device-id={name}", "--root", str(tmp_path / "dev"),
                       "--trusted-root", str(keys / "root.json"))
    _assert_refused(code, err, "--device-id")


@pytest.mark.parametrize("flag", ["--device-id", "--channel"])
def test_serve_refuses_a_bad_device_id_or_channel_before_touching_the_store(tmp_path: Path, keys: Path, flag: str) -> None:
    pytest.importorskip("uvicorn")
    code, _, err = cli("serve", str(tmp_path / "store"), "--state-dir", str(tmp_path / "state"),
                       "--trusted-root", str(keys / "root.json"), flag, "../../reports/other")
    _assert_refused(code, err, flag)
    assert not (tmp_path / "state").exists() and not (tmp_path / "store").exists()


@pytest.mark.parametrize("command", [["publish", "BUNDLE"], ["rollout", "set"], ["rollout", "check"],
                                     ["release", "promote"], ["release", "rollback"]])
def test_publishing_commands_name_the_channel_flag_and_pattern(tmp_path: Path, keys: Path, command: list[str]) -> None:
    args = [str(tmp_path) if part == "BUNDLE" else part for part in command]
    code, _, err = cli(*args, "--store", str(tmp_path / "store"), "--keys", str(keys), "--channel", "../evil")
    _assert_refused(code, err, "--channel")
    assert not (tmp_path / "store").exists()


def test_key_builders_refuse_unsafe_names_even_past_the_cli() -> None:
    from edgec.cloud_sync.agent import AgentConfig
    from edgec.cloud_sync.fleet import report_key

    with pytest.raises(ConfigError, match="device id"):
        report_key("../timestamp")
    with pytest.raises(ConfigError, match="--channel"):
        AgentConfig(store_url="s", device_id="dev-1", root=Path("r"), channel="../x")
    with pytest.raises(ConfigError, match="--device-id"):
        AgentConfig(store_url="s", device_id="a/b", root=Path("r"))
    assert report_key("dev-1.a_b") == "reports/dev-1.a_b.json"
