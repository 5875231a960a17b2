"""The click CLI in-process: shell completion of targets and precisions, one-line usage errors with exit 2,
grouped help, plugin commands, and argparse-compatible parsing (greedy and optional-value options)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from edgec.compiler import cli
from edgec.core.cli_kit import spread_greedy
from edgec.targets.base import TARGETS
from tests.support.cli import cli as run


def complete(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], words: str) -> list[str]:
    """What bash's completion asks edgec for ``words`` (the last word is the one being completed)."""
    parts = words.split(" ")
    monkeypatch.setenv("_EDGEC_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", str(len(parts) - 1))
    capsys.readouterr()
    assert cli.main([]) == 0
    return [line.split(",", 1)[1] for line in capsys.readouterr().out.splitlines()]


def test_target_completion_names_every_registered_target(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    names = complete(monkeypatch, capsys, "edgec build m.onnx --target ")
    assert names == TARGETS.names() and {"onnx", "openvino", "tflite"} <= set(names)


def test_target_completion_completes_the_last_entry_of_a_list_and_skips_those_given(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert complete(monkeypatch, capsys, "edgec build m.onnx --target onnx,tfl") == ["onnx,tflite"]
    assert "onnx,onnx" not in complete(monkeypatch, capsys, "edgec build m.onnx --target onnx,")


def test_precision_completion_offers_the_precisions_of_the_targets_given(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    expected = list(dict.fromkeys(TARGETS.get("onnx").precisions))
    assert complete(monkeypatch, capsys, "edgec build m.onnx --target onnx --precision ") == expected
    assert complete(monkeypatch, capsys, "edgec build m.onnx --precision fp32,in") == ["fp32,int8"]


def test_command_completion_lists_plugin_commands_too(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    names = complete(monkeypatch, capsys, "edgec ")
    assert names[:2] == ["build", "verify"] and {"bench", "publish", "agent", "serve"} <= set(names)


@pytest.mark.parametrize(("shell", "marker"), [("bash", "complete -o nosort -F"), ("zsh", "compdef"),
                                               ("fish", "complete --no-files --command edgec")])
def test_completion_scripts_are_printed_for_bash_zsh_and_fish(shell: str, marker: str, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("_EDGEC_COMPLETE", f"{shell}_source")
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert marker in out and "_EDGEC_COMPLETE" in out, out


@pytest.mark.parametrize(("argv", "fragment", "see"), [
    (["build", "m.onnx", "--calib-max-mb", "x"], "'--calib-max-mb': 'x' is not a valid integer", "edgec build"),
    (["build", "m.onnx", "--bogus"], "no such option '--bogus'", "edgec build"),
    (["build", "m.onnx", "--executor", "slurm"], "'slurm' is not one of 'local', 'ray'", "edgec build"),
    (["keys"], "missing ACTION: expected one of init, rotate", "edgec keys"),
    (["fleet", "status"], "missing option '--store'", "edgec fleet status"),
    (["bench", "--runs", "0"], "expected a positive integer, got 0", "edgec bench"),
    (["no-such-command"], "no such command 'no-such-command'", "edgec"),
])
def test_usage_errors_are_one_line_config_errors_naming_the_commands_help(argv: list[str], fragment: str,
                                                                          see: str) -> None:
    code, out, err = run(*argv)
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and out == "", (code, err)
    assert lines[0].startswith("edgec: config error: ") and fragment in lines[0], lines[0]
    assert lines[0].endswith(f"(see '{see} --help')"), lines[0]


def test_edgec_alone_prints_the_help_and_exits_2_and_version_exits_0() -> None:
    code, out, _ = run()
    assert code == 2 and out.startswith("Usage: edgec") and "build" in out
    assert run("--version")[:2] == (0, f"edgec {cli.__version__}\n")


def test_help_groups_commands_by_room_and_ends_with_the_exit_codes() -> None:
    code, out, _ = run("--help")
    assert code == 0
    order = [out.index(heading) for heading in ("Build and inspect:", "Benchmarks:", "Publishing and devices:",
                                                "Serving:", "exit codes:")]
    assert order == sorted(order), out
    assert out.index("  build") < out.index("  verify") < out.index("  bench") < out.index("  publish")
    assert "0 ok, 1 internal error" in out.split("exit codes:")[1]


def test_build_help_lists_its_options_by_section_with_target_flags_and_plugin_options() -> None:
    code, out, _ = run("build", "-h")
    assert code == 0
    sections = ["Arguments:", "Source and output:", "Inputs, calibration and golden data:", "Quantization and accuracy:",
                "Target options:", "Matrix and build farm:", "Cache and progress:", "exit codes:"]
    assert [out.index(s) for s in sections] == sorted(out.index(s) for s in sections), out
    target_part = out.split("Target options:")[1].split("Matrix and build farm:")[0]
    assert "--palettize" in target_part and "--target-option" in target_part
    assert "--require-speedup [FACTOR]" in out and "first failed cell" in out


def test_an_interrupted_command_exits_130_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_targets", interrupted)
    assert run("targets") == (130, "", "edgec: interrupted\n")


def test_parse_args_gives_handlers_the_namespace_argparse_gave() -> None:
    args = cli.parse_args(["build", "m.onnx", "--target", "onnx,tflite", "--palettize", "4"])
    assert (args.command, args.source, args.target, args.precision) == ("build", "m.onnx", ["onnx,tflite"], [])
    assert args.target_flag_palettize == ["4"] and args.out == Path("bundles") and args.require_speedup is None
    assert cli.parse_args(["build", "m.onnx", "--out", "s3://b/p"]).out == "s3://b/p"
    assert cli.parse_args(["build", "m.onnx", "--require-speedup"]).require_speedup == 1.0
    assert cli.parse_args(["build", "m.onnx", "--require-speedup", "1.5"]).require_speedup == 1.5
    keys = cli.parse_args(["keys", "rotate", "--store", "s", "--role", "timestamp"])
    assert (keys.command, keys.keys_command, keys.role, keys.keys) == ("keys", "rotate", "timestamp", None)


def test_greedy_merge_takes_every_value_up_to_the_next_option() -> None:
    assert spread_greedy(["b1", "--merge", "a.json", "b.json", "--out", "r", "c"], ["--merge"]) == [
        "b1", "--merge", "a.json", "--merge", "b.json", "--out", "r", "c"]
    args = cli.parse_args(["bench", "b1", "--merge", "a.json", "b.json", "--out", "r"])
    assert (args.bundle, args.merge, args.out) == ([Path("b1")], [Path("a.json"), Path("b.json")], Path("r"))


def test_agent_once_and_interval_together_are_refused_before_anything_runs(tmp_path: Path) -> None:
    code, _, err = run("agent", "--store", str(tmp_path / "s"), "--device-id", "d1", "--root", str(tmp_path / "dev"),
                       "--once", "--interval", "5")
    assert code == 2 and err.count("\n") == 1 and "--once and --interval cannot be combined" in err, err
    assert not (tmp_path / "s").exists() and not (tmp_path / "dev").exists()


def test_a_plugin_module_adds_its_commands_under_its_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "edgec_test_plugin.py").write_text(textwrap.dedent('''
        from edgec.core.cli_kit import Argument, command

        SECTION = "Greetings"

        def hello(args):
            print(f"hello {args.who} from {args.command}")
            return 4

        def commands():
            return [command("hello", hello, [Argument("who")], help="say hello")]
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "PLUGIN_MODULES", [*cli.PLUGIN_MODULES, "edgec_test_plugin", "edgec_not_installed"])
    assert run("hello", "world") == (4, "hello world from hello\n", "")
    assert "Greetings:\n  hello" in run("--help")[1]
    sys.modules.pop("edgec_test_plugin", None)
