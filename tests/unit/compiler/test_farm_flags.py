"""The farm's flags and recipe keys are checked before anything is imported or written (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.compiler import recipe
from edgec.compiler.cli import main
from tests.support.models import make_conv_onnx


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, fragment: str) -> None:
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment in err, err


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--address", "127.0.0.1:6379"], "--address needs --executor ray"),
    (["--out", "s3://bucket/bundles"], "a store URL as --out needs --executor ray"),
    (["--cache-store", "s3://bucket/cache"], "--cache-store needs --executor ray"),
    (["--executor", "ray", "--jobs", "2"], "--jobs 2 is for --executor local"),
])
def test_farm_flags_without_the_farm_are_config_errors_before_any_import(
        flags: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = make_conv_onnx(tmp_path / "m.onnx")
    one_line_error(capsys, ["build", str(source), "--out", str(tmp_path / "out"), *flags], 2, fragment)
    assert not (tmp_path / "out").exists()


def test_recipe_takes_the_farm_keys_and_refuses_an_unknown_executor(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("models: [{source: m.onnx}]\nexecutor: ray\naddress: ray://head:10001\n"
                    "out-store: s3://bucket/bundles\ncache-store: cache\n")
    loaded = recipe.read(path)
    assert (loaded.executor, loaded.address, loaded.out_store, loaded.cache_store) == (
        "ray", "ray://head:10001", "s3://bucket/bundles", "cache")
    assert {"executor", "address", "out-store", "cache-store"} <= set(recipe.schema()["properties"])
    path.write_text("models: [{source: m.onnx}]\nexecutor: slurm\n")
    with pytest.raises(Exception, match="executor"):
        recipe.read(path)


def test_a_ray_address_that_does_not_answer_is_a_sync_error_within_seconds(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    pytest.importorskip("ray")
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = make_conv_onnx(tmp_path / "m.onnx")
    one_line_error(capsys, ["build", str(source), "--executor", "ray", "--address", f"127.0.0.1:{port}",
                            "--out", str(tmp_path / "out")], 9, f"cannot reach the Ray cluster at 127.0.0.1:{port}")
    assert not (tmp_path / "out").exists()
