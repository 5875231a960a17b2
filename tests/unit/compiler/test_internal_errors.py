"""Bugs surface as internal errors (exit 1, traceback, "please report it"); toolchain failures stay export errors.

The injected bugs are monkeypatched into a pass's ``run_impl`` and the build runs in-process through
``edgec.compiler.cli.main``, with a fresh stage cache so that the pass really runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.compiler import cli
from edgec.compiler.passes.base import PassResult, wrap_failure
from edgec.compiler.passes.simplify import Simplify
from edgec.core import errors
from edgec.core.errors import ExportError, InternalError, brief, is_edgec_bug, raise_if_bug
from edgec.core.types import FORMAT_PT2


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(cache))
    return cache


def _build(conv_onnx: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["build", str(conv_onnx), "--out", str(out)])
    return code, capsys.readouterr().err


def _caught(call) -> BaseException:  # noqa: ANN001 - any zero-argument callable
    try:
        call()
    except Exception as exc:  # the test wants the exception object itself
        return exc
    raise AssertionError("expected an exception")


def test_key_error_inside_a_pass_is_an_internal_error_with_traceback_naming_the_pass(
        tmp_path: Path, conv_onnx: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def buggy(self, artifact, ctx):  # noqa: ANN001, ANN202 - a pass body with a bug in edgec's own code
        return {}["nodes_before"]

    monkeypatch.setattr(Simplify, "run_impl", buggy)
    out = tmp_path / "out"
    code, err = _build(conv_onnx, out, capsys)
    assert code == errors.EXIT_INTERNAL, err
    assert "Traceback (most recent call last)" in err and "in buggy" in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("edgec: internal error") and "please report it" in last, last
    assert "pass 'simplify' failed" in last and "KeyError" in last and "nodes_before" in last, last
    assert not out.exists()
    assert {p.name for p in tmp_path.iterdir()} <= {conv_onnx.name, "cache"}, list(tmp_path.iterdir())


def test_broken_post_condition_of_a_pass_is_an_internal_error_not_an_export_error(
        tmp_path: Path, conv_onnx: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def wrong_format(self, artifact, ctx):  # noqa: ANN001, ANN202 - claims to produce a pt2 from an onnx pass
        return PassResult(type(artifact)(artifact.path, FORMAT_PT2, artifact.inputs, artifact.outputs, artifact.digest), False)

    monkeypatch.setattr(Simplify, "run_impl", wrong_format)
    out = tmp_path / "out"
    code, err = _build(conv_onnx, out, capsys)
    assert code == errors.EXIT_INTERNAL, err
    assert "Traceback" in err and "ensures" in err, err
    assert "pass 'simplify' produced pt2, expected onnx" in err.strip().splitlines()[-1], err
    assert not out.exists()


def test_toolchain_key_error_inside_a_pass_stays_a_one_line_export_error(
        tmp_path: Path, conv_onnx: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import onnx
    import onnxslim

    # onnxslim failing on the model the way a toolchain does: its own code raises (here onnx's dtype table)
    monkeypatch.setattr(onnxslim, "slim", lambda model: onnx.helper.tensor_dtype_to_np_dtype(12345))
    out = tmp_path / "out"
    code, err = _build(conv_onnx, out, capsys)
    assert code == errors.EXIT_EXPORT, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1].startswith("edgec: export error: pass 'simplify' failed"), err
    assert "KeyError" in lines[-1], err
    assert not out.exists()


def test_wrap_failure_names_the_passes_that_ran_before() -> None:
    bug = _caught(lambda: {}["x"])
    wrapped = wrap_failure(bug, Simplify(), ["fix_shapes", "quantize_fp16"])  # type: ignore[arg-type]
    assert isinstance(wrapped, InternalError)
    assert str(wrapped) == "pass 'simplify' failed after fix_shapes, quantize_fp16: KeyError: 'x'"


def test_toolchain_exception_types_are_not_bugs() -> None:
    import onnx
    import onnxruntime as ort

    invalid = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["a"], ["b"])], "g", [], []))
    checker = _caught(lambda: onnx.checker.check_model(invalid, full_check=True))
    assert type(checker).__module__.startswith("onnx") and not is_edgec_bug(checker)
    runtime = _caught(lambda: ort.InferenceSession(b"not a model"))
    assert type(runtime).__module__.startswith("onnxruntime") and not is_edgec_bug(runtime)


def test_plain_exceptions_are_bugs_where_edgec_raised_them_not_where_a_toolchain_did() -> None:
    import onnx

    assert is_edgec_bug(_caught(lambda: {}["missing"]))  # raised here, not in a toolchain
    assert is_edgec_bug(_caught(lambda: np.zeros(3).reshape(2, 2)))  # numpy called by non-toolchain code
    assert not is_edgec_bug(_caught(lambda: onnx.helper.tensor_dtype_to_np_dtype(12345)))  # KeyError inside onnx
    assert not is_edgec_bug(_caught(lambda: open(Path("/nonexistent/x"))))  # the machine, not edgec  # noqa: SIM115
    assert not is_edgec_bug(errors.ExportError("bad model")) and is_edgec_bug(InternalError("broken"))


def test_raise_if_bug_raises_internal_error_from_the_bug_and_returns_for_a_toolchain_failure() -> None:
    import onnx

    bug = _caught(lambda: [][1])
    with pytest.raises(InternalError, match=r"running the onnx bundle: IndexError: list index out of range") as info:
        raise_if_bug(bug, "running the onnx bundle")
    assert info.value.__cause__ is bug
    raise_if_bug(_caught(lambda: onnx.helper.tensor_dtype_to_np_dtype(12345)), "converting")  # returns


def test_brief_folds_whitespace_and_marks_a_cut() -> None:
    assert brief(ValueError("a\n  b\tc")) == "a b c"
    assert brief("x" * 10, 4) == "xxxx..." and brief("x" * 4, 4) == "xxxx"
    assert brief(ExportError("  spaced   out "), None) == "spaced out"


def test_every_family_has_its_own_exit_code_and_sync_is_nine() -> None:
    codes = [family.exit_code for family in errors.ERROR_FAMILIES]
    assert len(set(codes)) == len(codes) and errors.EXIT_INTERNAL not in codes
    assert errors.SyncError.exit_code == errors.EXIT_SYNC == 9
    assert not issubclass(errors.SyncError, errors.IntegrityError)
