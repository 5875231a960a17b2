"""Typed target options: built at the edge, checked before anything is imported, help made from the fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.compiler.cli import main
from edgec.compiler.config import BuildConfig
from edgec.core.errors import ConfigError
from edgec.targets.base import TARGETS, PrecisionRequest, named_flags
from edgec.targets.coreml import CoreMLOptions
from edgec.targets.openvino import OpenVinoOptions
from edgec.targets.tensorrt import TensorRTOptions

FACTORY = '''
from pathlib import Path

Path(__file__).with_name("imported.marker").write_text("the source was imported")


def factory():
    raise RuntimeError("a bad option must stop the build before this runs")
'''

BAD = [
    ("coreml", ["--target-option", "palettize=5"], 2, "bad coreml option palettize='5' (--palettize): must be one of 4, 6, 8"),
    ("coreml", ["--target-option", "min_deployment_target=iOS 17"], 2, "not a coremltools target name"),
    ("coreml", ["--precision", "int8", "--palettize", "4"], 4, "--palettize replaces int8 weight quantization"),
    ("tensorrt", ["--trt-profile", "x:1x3x8x8,4x3x8x8"], 2,
     "bad tensorrt option trt_profile='x:1x3x8x8,4x3x8x8' (--trt-profile): 'x:1x3x8x8,4x3x8x8' is not NAME:MIN,OPT,MAX"),
    ("tensorrt", ["--trt-profile", "x:8x3x8x8,4x3x8x8,1x3x8x8"], 2, "with 1 <= min <= opt <= max"),
    ("tensorrt", ["--precision", "int8", "--int8-mode", "dynamic"], 4, "TensorRT has no dynamic (run-time) INT8"),
    ("openvino", ["--target-option", "fast_bias_correction=banana"], 2, "expected true or false"),
    ("tflite", ["--target-option", "io_dtype=int16"], 2, "bad tflite option io_dtype='int16' (--io-dtype)"),
]


@pytest.mark.parametrize(("target", "args", "code", "text"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_target_option_fails_before_the_source_is_imported(target: str, args: list[str], code: int, text: str,
                                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.py").write_text(FACTORY)
    cache = tmp_path / "cache"
    got = main(["build", f"{tmp_path / 'model.py'}:factory", "--target", target, *args,
                "--out", str(tmp_path / "out"), "--cache-dir", str(cache)])
    err = capsys.readouterr().err.strip()
    assert got == code and text in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "imported.marker").exists()
    assert not (tmp_path / "out").exists() and not (cache.exists() and any(cache.iterdir()))


def test_named_flags_and_target_options_fill_the_same_typed_options() -> None:
    flags = {f.flag: f for f in named_flags()}
    assert {"--palettize", "--io-dtype", "--trt-profile"} <= set(flags)
    assert flags["--palettize"].targets == ("coreml",) and flags["--trt-profile"].repeatable
    config = BuildConfig(source="m.onnx", target="tensorrt",
                         target_options=(("trt_profile", "x:1x3x8x8,4x3x8x8,8x3x8x8"), ("trt_profile", "y:1,2,3")))
    assert config.target_options == TensorRTOptions(trt_profile={"x": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8)),
                                                                 "y": ((1,), (2,), (3,))})
    pal = BuildConfig(source="m.pt2", target="coreml", target_options=(("palettize", "6"), ("palettize", "4")))
    assert pal.target_options == CoreMLOptions(palettize=4) and pal.target_options.suffix() == "-p4"


def test_a_recipe_passes_typed_options_and_another_targets_model_is_refused() -> None:
    typed = OpenVinoOptions(preset="mixed", ignored_types=("Softmax",))
    assert BuildConfig(source="m.onnx", target="openvino", target_options=typed).target_options is typed
    assert OpenVinoOptions.from_pairs([("ignored_types", "Softmax, MVN")], "openvino").ignored_types == ("Softmax", "MVN")
    with pytest.raises(ConfigError, match="the onnx target takes OnnxOptions, not OpenVinoOptions"):
        BuildConfig(source="m.onnx", target="onnx", target_options=typed)
    with pytest.raises(ConfigError, match="target options are OpenVinoOptions, expected CoreMLOptions"):
        TARGETS.get("coreml")().validate(PrecisionRequest("fp16", options=typed))


def test_every_option_has_a_description_and_every_model_forbids_unknown_keys() -> None:
    for cls in TARGETS.all():
        assert cls.Options.model_config.get("extra") == "forbid" and cls.Options.model_config.get("frozen"), cls.name
        assert all(info.description for info in cls.Options.model_fields.values()), cls.name
        with pytest.raises(ConfigError, match=f"the {cls.name} target has no option 'nope'; it accepts: "):
            cls.Options.from_pairs([("nope", "1")], cls.name)
