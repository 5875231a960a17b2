"""``--input`` dims (sizes, ``?``, ranges), which targets keep dynamic dims, the second golden shape, golden files
and parity over samples of two shapes, and the MACs of a model with dynamic H/W: fast, in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.compiler import dynamic_dims, flops, golden, parity
from edgec.compiler.config import BuildConfig, parse_input_shape
from edgec.compiler.dynamic_dims import DimRange
from edgec.compiler.golden_size import kept_by_shape, write_sized_golden
from edgec.compiler.planner import float_steps, graph_shapes
from edgec.compiler.synthetic import synthetic_feeds, synthetic_shape
from edgec.core.bundle import write_golden
from edgec.core.errors import ConfigError
from edgec.core.types import FORMAT_ONNX, TensorSpec
from edgec.runtime_shims import measure
from edgec.targets.base import PrecisionRequest, target_class
from edgec.targets.tensorrt import TensorRTOptions, golden_shapes

LINE = TensorSpec("x", ("batch", 3, 48, "width"), "float32")
TOKENS = (TensorSpec("ids", ("batch", "seq"), "int64"), TensorSpec("mask", ("batch", "seq"), "int64"))


# ------------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(("text", "shape"), [
    ("x:1x3x48x320", (1, 3, 48, 320)),
    ("x:1x3x48x?", (1, 3, 48, None)),
    ("x:1x3x48x[32..640]", (1, 3, 48, DimRange(32, 640))),
    ("x:1x3x48x320[32..640]", (1, 3, 48, DimRange(32, 640, 320))),
    ("input:0:1x?x[1..1]", (1, None, DimRange(1, 1))),
])
def test_input_dims_parse_as_sizes_question_marks_and_ranges(text: str, shape: tuple) -> None:
    assert parse_input_shape(text) == (text.rpartition(":")[0], shape)


@pytest.mark.parametrize("text", ["x:1x[640..32]", "x:1x700[32..640]", "x:1x[0..5]", "x:1x[3..]", "x:1x??", "x:1x[3..4]5",
                                  "x:", "x:1x0"])
def test_malformed_input_dims_are_refused_naming_the_flag_and_the_forms(text: str) -> None:
    with pytest.raises(ConfigError, match=r"bad --input .*\? for a dynamic dim.*\[LOW\.\.HIGH\]"):
        parse_input_shape(text)


def test_a_range_keeps_its_size_or_brings_the_rule_s_size_into_it() -> None:
    assert DimRange(32, 640).pick(16) == 32 and DimRange(1, 8).pick(16) == 8 and DimRange(1, 640, 320).pick(16) == 320
    assert 423 in DimRange(32, 640) and 700 not in DimRange(32, 640) and str(DimRange(32, 640, 320)) == "320[32..640]"


def test_a_build_config_holds_ranges_and_dumps_them() -> None:
    config = BuildConfig(source="m.onnx", input_shapes=dict([parse_input_shape("x:1x3x48x[32..640]")]))
    assert config.input_shapes["x"][3] == DimRange(32, 640)
    assert config.model_dump(mode="json")["input_shapes"]["x"][3] == {"low": 32, "high": 640, "size": None}


def test_synthetic_inputs_take_the_sizes_ranges_and_rule_of_input() -> None:
    assert synthetic_shape(LINE, (1, 3, 48, 320)) == (1, 3, 48, 320)
    assert synthetic_shape(LINE, (1, 3, 48, DimRange(32, 640))) == (1, 3, 48, 32)
    assert synthetic_shape(LINE, (1, 3, 48, None), spatial=64) == (1, 3, 48, 64)
    feeds = synthetic_feeds((LINE,), 2, 16, fixed={"x": (2, 3, 48, DimRange(32, 640, 100))})
    assert [f["x"].shape for f in feeds] == [(2, 3, 48, 100)] * 2


@pytest.mark.parametrize(("shape", "fragment"), [
    ((1, 3, 48), "does not fit the model's shape ['batch', 3, 48, 'width']"),
    ((1, 4, 48, 320), "does not fit"), ((1, DimRange(1, 3), 48, 320), "does not fit")])
def test_input_dims_that_do_not_fit_the_model_are_refused(shape: tuple, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        dynamic_dims.check_given((LINE,), {"x": shape})
    with pytest.raises(ConfigError, match="'y', which is not a model input; inputs are x"):
        dynamic_dims.check_given((LINE,), {"y": (1,)})


# ------------------------------------------------------------------------------------------------ targets


def test_onnx_and_openvino_keep_dynamic_dims_and_write_no_sizes_into_the_graph(tmp_path: Path) -> None:
    given = {"x": (1, 3, 48, 320)}
    for name in ("onnx", "openvino"):
        assert target_class(name).dynamic_shapes and target_class(name)().dims_to_fix((LINE,)) == []
        assert graph_shapes(BuildConfig(source="m.onnx", target=name, input_shapes=given)) == {}
    steps = float_steps(BuildConfig(source="m.onnx", target="tensorrt", input_shapes=given), FORMAT_ONNX)
    assert steps[0] == ("fix_shapes", {"shapes": {"x": [1, 3, 48, 320]}})
    assert [n for n, _ in float_steps(BuildConfig(source="m.onnx", input_shapes=given), FORMAT_ONNX)] == ["simplify"]


def test_a_fixed_shape_target_asks_for_the_size_of_each_dynamic_dim_but_the_batch() -> None:
    tflite = target_class("tflite")()
    assert not tflite.dynamic_shapes and tflite.dims_to_fix((LINE,)) == [(LINE, 3)]
    state = TensorSpec("state", (2, "batch", 8), "float32")
    assert tflite.dims_to_fix((LINE, state)) == [(LINE, 3)]  # a state's batch is no spatial dim
    with pytest.raises(ConfigError) as caught:
        dynamic_dims.check_target_dims(tflite, (LINE,), {})
    line = caught.value.one_line()
    for fragment in ("tflite target needs fixed input sizes", "dim 3 ('width') of input 'x'", "--input gives no size",
                     "--input x:1x3x48xN", "keeps dynamic shapes (onnx, openvino)"):
        assert fragment in line, line
    with pytest.raises(ConfigError, match=r"--input gives \[32\.\.640\] for it"):
        dynamic_dims.check_target_dims(tflite, (LINE,), {"x": (1, 3, 48, DimRange(32, 640))})
    dynamic_dims.check_target_dims(tflite, (LINE,), {"x": (1, 3, 48, 320)})


def test_tensorrt_asks_for_float_dims_only_and_not_for_inputs_with_a_profile_of_their_own() -> None:
    trt = target_class("tensorrt")()
    assert trt.dims_to_fix(TOKENS) == []  # token dims get a 1..512 profile
    assert trt.dims_to_fix((LINE,)) == [(LINE, 3)]
    profiled = PrecisionRequest("fp32", options=TensorRTOptions(trt_profile={"x": ((1, 3, 48, 32), (1, 3, 48, 320), (1, 3, 48, 640))}))
    assert trt.dims_to_fix((LINE,), profiled) == []


def test_tensorrt_profiles_follow_the_shared_synthetic_rule() -> None:
    state = TensorSpec("state", (2, "batch", "hidden"), "float32")
    assert golden_shapes((*TOKENS, state), PrecisionRequest("fp32")) == {"ids": (1, 16), "mask": (1, 16), "state": (2, 1, 16)}


# ------------------------------------------------------------------------------------------------ manifest ranges


def test_ranges_are_recorded_on_dynamic_dims_and_bound_what_a_spec_accepts() -> None:
    (spec,) = dynamic_dims.with_ranges((LINE,), {"x": (1, 3, 48, DimRange(32, 640, 320))})
    assert spec.to_json()["ranges"] == [None, None, None, [32, 640]]
    assert spec.accepts_shape((2, 3, 48, 423)) and not spec.accepts_shape((1, 3, 48, 700))
    assert not spec.accepts_shape((1, 3, 48, 16)) and LINE.accepts_shape((1, 3, 48, 700))
    malformed = TensorSpec.from_json({"name": "x", "shape": ["b", "w"], "dtype": "float32", "ranges": [None, ["a", 1]]})
    assert malformed.accepts_shape((1, 5))
    fixed = TensorSpec("x", (1, 3, 48, 320), "float32")
    assert "ranges" not in dynamic_dims.with_ranges((fixed,), {"x": (1, 3, 48, DimRange(32, 640, 320))})[0].extra


# ------------------------------------------------------------------------------------------------ second golden shape


def test_second_sizes_double_then_halve_within_the_range() -> None:
    feed = {"x": np.zeros((1, 3, 48, 320), np.float32)}
    dims = golden.varying_dims((LINE,))
    assert dims == {"width": [("x", 3)]}
    assert golden.second_sizes(feed, dims) == [{"width": 640}, {"width": 160}]
    assert golden.second_sizes(feed, dims, {"x": (1, 3, 48, DimRange(32, 400))}) == [{"width": 160}, {"width": 400}]
    assert golden.second_sizes(feed, dims, {"x": (1, 3, 48, DimRange(320, 320))}) == []


def test_inputs_sharing_a_dim_name_change_together_by_wrapping() -> None:
    dims = golden.varying_dims(TOKENS)
    feed = {"ids": np.array([[101, 7, 8, 102]]), "mask": np.ones((1, 4), np.int64)}
    grown = golden.resized(feed, dims, {"seq": 6})
    assert grown["ids"].tolist() == [[101, 7, 8, 102, 101, 7]] and grown["mask"].shape == (1, 6)
    assert golden.resized(feed, dims, {"seq": 2})["ids"].tolist() == [[101, 7]]


def test_a_placeholder_name_on_dims_of_different_sizes_joins_nothing() -> None:
    spec = TensorSpec("x", (None, 3, "?", "?"), "float32")
    dims = golden.same_sizes(golden.varying_dims((spec,)), {"x": np.zeros((1, 3, 12, 20), np.float32)})
    assert dims == {"?": [("x", 2)], "x[3]": [("x", 3)]}
    assert golden.second_sizes({"x": np.zeros((1, 3, 12, 20))}, dims)[0] == {"?": 24, "x[3]": 40}


def _double(feeds: list[dict]) -> list[dict]:
    return [{"y": np.asarray(f["x"]) * 2} for f in feeds]


def test_the_golden_set_adds_samples_at_a_second_size_that_the_reference_runs() -> None:
    inputs = [{"x": np.full((1, 3, 48, 8), i, np.float32)} for i in range(8)]
    outs, calls = _double(inputs), []

    def reference(feeds: list[dict]) -> list[dict]:
        calls.append(feeds[0]["x"].shape[3])
        if feeds[0]["x"].shape[3] == 16:
            raise golden.ExportError("Reshape cannot take 16")
        return _double(feeds)

    got_in, got_out, source = golden.with_second_shape(inputs, outs, {"kind": "synthetic"}, (LINE,), None, 256, reference)
    assert calls == [16, 4] and len(got_in) == len(got_out) == 10
    assert [f["x"].shape[3] for f in got_in[8:]] == [4, 4] and got_in[9]["x"][0, 0, 0, 0] == 7
    assert source["second_shape"] == {"samples": 2, "dims": {"width": [8, 4]},
                                      "made_from": "the last 2 golden inputs, wrapped or cut along those dims"}
    assert "2 more at a second size of the dynamic dims: width 4 (not 8)" in golden.describe(source, 10)


def test_without_a_size_the_reference_runs_at_the_golden_set_keeps_one_shape_and_says_why() -> None:
    inputs = [{"x": np.zeros((1, 3, 48, 8), np.float32)}]

    def failing(feeds: list[dict]) -> list[dict]:
        raise golden.ExportError("no")

    got_in, _, source = golden.with_second_shape(inputs, _double(inputs), {}, (LINE,), None, 256, failing)
    assert len(got_in) == 1 and "at width 16 the FP32 reference failed: no" in source["second_shape"]["skipped"]
    static = TensorSpec("x", (1, 3, 48, 8), "float32")
    assert golden.with_second_shape(inputs, _double(inputs), {}, (static,), None, 256, failing)[2] == {}


# ------------------------------------------------------------------------------------------------ golden files, parity


def _two_shapes() -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(0)
    inputs = [{"x": rng.standard_normal((1, 3, 4, w)).astype(np.float32)} for w in (8, 8, 8, 16)]
    return inputs, _double(inputs)


def test_a_golden_file_holds_groups_of_each_shape_and_older_readers_see_the_first(tmp_path: Path) -> None:
    inputs, outputs = _two_shapes()
    write_golden(tmp_path / "g.npz", inputs, outputs)
    with np.load(tmp_path / "g.npz") as data:
        assert sorted(data.files) == ["inputs/x", "inputs@1/x", "outputs/y", "outputs@1/y"] and data["inputs/x"].shape[0] == 3
    got_in, got_out = measure.read_golden(tmp_path / "g.npz")
    assert [f["x"].shape[3] for f in got_in] == [8, 8, 8, 16]
    assert all(np.array_equal(a["y"], b["y"]) for a, b in zip(got_out, outputs))


def test_a_capped_golden_file_keeps_a_sample_of_each_shape(tmp_path: Path) -> None:
    assert kept_by_shape([list(range(8)), [8, 9]], 5) == [0, 2, 4, 6, 8] and kept_by_shape([list(range(8)), [8, 9]], 1) == [0, 8]
    inputs, outputs = _two_shapes()
    kept, record = write_sized_golden(tmp_path / "g.npz", inputs, outputs, 10, 0.0001)
    assert kept == [0, 3] and record["samples"] == 2 and record["shapes"] == 2
    assert "one sample of each of its 2 shapes takes" in record["reason"]


def test_parity_over_two_shapes_sees_an_error_at_the_second_shape_only() -> None:
    inputs, reference = _two_shapes()
    actual = [dict(r) for r in reference]
    assert parity.compare(reference, actual, ["y"])["y"]["cosine"] == 1.0
    actual[3] = {"y": reference[3]["y"] * -1}
    broken = parity.compare(reference, actual, ["y"])["y"]
    assert broken["cosine"] < 0.5 and broken["max_abs"] == pytest.approx(2 * np.abs(reference[3]["y"]).max(), rel=1e-5)
    stacked = parity.compare(reference[:3], actual[:3], ["y"])["y"]
    assert stacked == measure.compare_output(np.stack([r["y"] for r in reference[:3]]), np.stack([a["y"] for a in actual[:3]]))


def test_class_scores_and_parts_of_two_shapes_are_judged_together() -> None:
    rng = np.random.default_rng(3)
    ref = [rng.standard_normal((1, n, 6)).astype(np.float32) for n in (4, 9)]
    got = [r.copy() for r in ref]
    got[1][0, :, 4:] = 0.5  # the second part (2 of 6 columns) of the larger sample collapsed
    measured = measure.compare_samples(ref, got, (2, [4, 2]))
    assert measured["part_sizes"] == [4, 2] and measured["part_cosines"][0] == 1.0 and measured["min_part_cosine"] < 0.9
    scores = [rng.standard_normal((1, 5)) for _ in range(2)] + [rng.standard_normal((2, 5))]
    counted = measure.compare_samples(scores, scores)
    assert counted["top1_agree"] == counted["top1_rows"] == 4


# ------------------------------------------------------------------------------------------------ MACs


def _strided(path: Path) -> Path:
    """Conv 7x7 stride 2 without padding on dynamic H/W: at 1x1 its output would have a negative size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 7, 7), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2])], "s",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_macs_of_dynamic_h_w_follow_a_sample_else_the_synthetic_rule_never_one(tmp_path: Path) -> None:
    model = _strided(tmp_path / "s.onnx")
    per_out = 3 * 7 * 7 * 4
    ruled = flops.file_cost(model)
    assert ruled.dims == {"n": 1, "h": 16, "w": 16} and ruled.macs == per_out * 5 * 5 and not ruled.uncounted
    sampled = flops.file_cost(model, shapes={"x": (8, 3, 33, 65)})
    assert sampled.dims == {"n": 1, "h": 33, "w": 65} and sampled.macs == per_out * 14 * 30
    assert flops.file_cost(model, {"n": 2, "h": 7, "w": 7}).macs == 2 * per_out
