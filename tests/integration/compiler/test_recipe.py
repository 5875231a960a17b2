"""Recipe files (``edgec build -f``): validated whole before anything is imported, errors naming the file, the
key path and what was expected; every model's cells built with typed per-target options, gates, bench, publish."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from edgec.compiler import recipe
from edgec.core.errors import ConfigError
from tests.conftest import REPO
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import make_calib, make_conv_onnx


def write(folder: Path, text: str, name: str = "edgec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with a tiny ONNX model and calibration data, as a recipe refers to them (relative paths)."""
    folder = tmp_path / "project"
    folder.mkdir()
    make_conv_onnx(folder / "tiny.onnx")
    make_calib(folder / "calib.npz")
    return folder


@pytest.mark.parametrize(("text", "says"), [
    ("targets: [onnx]\n", "models: missing; expected a value"),
    ("models: []\n", "models: is empty; expected at least one entry"),
    ("targets: [onx]\nmodels: [{source: a.onnx}]\n", "targets[0]: expected 'coreml', 'executorch', 'onnx'"),
    ("models: [{source: a.onnx, calib: c.npz}]\n", "models[0]: unknown key 'calib'; expected one of: calibration, eval"),
    ("models: [{sourc: a.onnx}]\n", "models[0]: unknown key 'sourc'"),
    ("models: [{source: a.onnx, calibration: {data: c.npz, samples: many}}]\n",
     "models[0].calibration.samples: expected a valid integer"),
    ("models: [{source: a.onnx, calibration: {data: c.npz, preprocess: 'resize=big'}}]\n",
     "models[0].calibration.preprocess: bad item 'resize=big'"),
    ("models: [{source: a.onnx, inputs: {x: 1xfoo}}]\n", "models[0].inputs: x: '1xfoo' is not DIMxDIM"),
    ("models: [{source: a.onnx}]\nprecisions: [fp32, int4]\n", "precisions[1]: expected 'fp32', 'fp16' or 'int8', got 'int4'"),
    ("models: [{source: a.onnx}]\ntargets: [onnx, onnx]\n", "targets: lists onnx more than once"),
    ("models: [{source: a.onnx}]\noptions: {coreml: {palettize: 5}}\n", "options.coreml.palettize: must be one of 4, 6, 8, got 5"),
    ("models: [{source: a.onnx}]\noptions: {onnx: {speed: max}}\n", "options.onnx: unknown key 'speed'; expected one of: quantize_ops"),
    ("models: [{source: a.onnx}]\noptions: {tpu: {}}\n", "options: unknown key 'tpu'; expected one of: coreml"),
    ("models: [{source: a.onnx}]\ngates: {min-cosine: 2}\n", "gates.min-cosine: expected less than or equal to 1, got 2"),
    ("models: [{source: a.onnx}]\ngates: {min_cosine: 0.9}\n", "gates: unknown key 'min_cosine'; expected one of: max-drop"),
    ("models: [{source: a.onnx}]\nprecisions: [fp32, int8]\npublish: {store: s, keys: k, channel: stable}\n",
     "publish.channel 'stable' would receive 2 bundles"),
    ("models: [{source: a.onnx}]\npublish: {store: s, keys: k, channel: '../{name}'}\n", "publish.channel: '../{name}' is not a channel name"),
    ("models: [{source: a.onnx}]\npublish: {store: s, keys: k, channel: '{model}'}\n", "has a placeholder other than {name}"),
    ("- models\n", "expected a mapping of keys (models, targets, ...) at the top, got list"),
    ("models:\n  - source: a.onnx\n   name: x\n", "not valid YAML at line 3, column 4"),
])
def test_recipe_errors_name_the_file_the_key_path_and_what_was_expected(tmp_path: Path, text: str, says: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        recipe.read(path)
    line = caught.value.one_line()
    assert line.startswith(f"edgec: config error: {path}: "), line
    assert says in line, line
    assert "\n" not in line


def test_bad_toml_and_unknown_suffixes_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 1, column 11"):
        recipe.read(write(tmp_path, "targets = onnx\n", "edgec.toml"))
    with pytest.raises(ConfigError, match=r"expected a \.yaml, \.yml or \.toml file"):
        recipe.read(write(tmp_path, "{}", "edgec.json"))
    with pytest.raises(ConfigError, match="cannot be read"):
        recipe.read(tmp_path / "missing.yaml")


def test_toml_and_yaml_recipes_give_the_same_cells(project: Path) -> None:
    yaml_path = write(project, """\
        targets: [onnx, openvino]
        precisions: [fp32, int8]
        options: {openvino: {preset: performance}}
        models:
          - source: tiny.onnx
            calibration: {data: calib.npz, samples: 16}
        """)
    toml_path = write(project, """\
        targets = ["onnx", "openvino"]
        precisions = ["fp32", "int8"]
        [options.openvino]
        preset = "performance"
        [[models]]
        source = "tiny.onnx"
        calibration = {data = "calib.npz", samples = 16}
        """, "edgec.toml")
    from_yaml = recipe.configs(yaml_path, recipe.read(yaml_path)).models
    from_toml = recipe.configs(toml_path, recipe.read(toml_path)).models
    assert from_yaml == from_toml
    cells = from_yaml[0]
    assert [(c.target, c.precision) for c in cells] == [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8")]
    assert cells[0].source == str(project / "tiny.onnx") and cells[0].calib == project / "calib.npz"  # relative to the recipe
    assert cells[2].target_options.model_dump()["preset"] == "performance"


def test_recipe_check_and_build_exit_2_with_one_line_before_importing(project: Path) -> None:
    path = write(project, "models: [{source: tiny.onnx, calibration: {data: calib.npz, samples: 0}}]\n")
    for args in (["recipe", "check", str(path)], ["build", "-f", str(path)]):
        proc = run_cli(*args)
        assert_one_line_error(proc, 2)
        assert f"{path}: models[0].calibration.samples: expected greater than or equal to 1, got 0" in proc.stderr
    assert not (project / "bundles").exists()


def test_recipe_builds_each_models_cells_from_any_folder_with_typed_options(project: Path, tmp_path: Path) -> None:
    path = write(project, """\
        out: bundles
        targets: [onnx, openvino]
        precisions: [fp32, int8]
        options: {openvino: {preset: performance}}
        gates: {min-cosine: 0.9}
        models:
          - source: tiny.onnx
            calibration: {data: calib.npz}
          - source: tiny.onnx
            name: small
            targets: [onnx]
            precisions: [fp16]
        """)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_cli("build", "-f", str(path), "--json", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    cells = json.loads(proc.stdout)
    assert [(c["model"], c["target"], c["precision"], c["status"]) for c in cells] == [
        ("tiny", "onnx", "fp32", "built"), ("tiny", "onnx", "int8", "built"), ("tiny", "openvino", "fp32", "built"),
        ("tiny", "openvino", "int8", "built"), ("small", "onnx", "fp16", "built")]
    assert sorted(p.name for p in (project / "bundles").iterdir()) == [
        "small-onnx-fp16", "tiny-onnx-fp32", "tiny-onnx-int8", "tiny-openvino-fp32", "tiny-openvino-int8"]
    manifest = json.loads((project / "bundles" / "tiny-openvino-int8" / "manifest.json").read_text())
    assert manifest["target_details"]["quantization"]["preset"] == "performance"
    assert not list(elsewhere.iterdir())


def test_a_failing_gate_fails_its_cells_writes_the_others_and_skips_publish(project: Path) -> None:
    path = write(project, """\
        targets: [onnx]
        precisions: [fp32, int8]
        gates: {min-cosine: 1.0}
        models: [{source: tiny.onnx, calibration: {data: calib.npz}}]
        publish: {store: store, keys: keys, channel: "{name}-{target}-{precision}"}
        """)
    proc = run_cli("build", "-f", str(path), "--json")
    cells = json.loads(proc.stdout)
    assert [(c["precision"], c["status"], c["family"]) for c in cells] == [("fp32", "built", None), ("int8", "failed", "accuracy gate")]
    assert proc.returncode == 7
    assert "bench and publish skipped: not every cell was built" in proc.stderr
    assert [p.name for p in (project / "bundles").iterdir()] == ["tiny-onnx-fp32"]
    assert not (project / "store").exists()


def test_with_a_recipe_target_and_precision_pick_cells_and_other_build_flags_are_refused(project: Path) -> None:
    path = write(project, """\
        targets: [onnx, openvino]
        precisions: [fp32, fp16]
        models: [{source: tiny.onnx}]
        """)
    proc = run_cli("build", "-f", str(path), "--target", "openvino", "--precision", "fp16", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [(c["target"], c["precision"]) for c in json.loads(proc.stdout)] == [("openvino", "fp16")]
    refused = [
        (["--target", "tflite"], "--target tflite: "),
        (["--calib", "calib.npz"], "--calib cannot be combined with -f"),
        (["--palettize", "4"], "--palettize cannot be combined with -f"),
        ([str(project / "tiny.onnx")], "give a SOURCE or -f RECIPE, not both"),
    ]
    for flags, says in refused:
        bad = run_cli("build", "-f", str(path), *flags)
        assert_one_line_error(bad, 2)
        assert says in bad.stderr, (flags, bad.stderr)


@pytest.mark.slow
def test_recipe_benches_its_bundles_and_publishes_each_to_its_channel(project: Path) -> None:
    keys = run_cli("keys", "init", "--keys", str(project / "keys"))
    assert keys.returncode == 0, keys.stderr
    path = write(project, """\
        targets: [onnx]
        precisions: [fp32, int8]
        models: [{source: tiny.onnx, calibration: {data: calib.npz}}]
        bench: {runs: 5, warmup: 1, repeats: 1, out: report}
        publish: {store: store, keys: keys, channel: "{name}-{precision}"}
        """)
    proc = run_cli("build", "-f", str(path))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((project / "report" / "bench.json").read_text())
    assert sorted((r["bundle"]["target"], r["bundle"]["precision"]) for r in report["results"]) == [("onnx", "fp32"), ("onnx", "int8")]
    listing = run_cli("release", "list", "--store", str(project / "store"), "--json")
    assert listing.returncode == 0, listing.stderr
    channels = json.loads(listing.stdout)
    assert sorted(channels["channels"]) == ["tiny-fp32", "tiny-int8"], channels


def test_recipe_schema_is_json_schema_that_the_example_recipe_satisfies() -> None:
    import jsonschema
    import yaml

    proc = run_cli("recipe", "schema")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(document)
    example = yaml.safe_load((REPO / "edgec.yaml").read_text())
    jsonschema.validate(example, document)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**example, "targets": ["onx"]}, document)
    options = document["$defs"]["TargetOptionTable"]["properties"]
    assert {"onnx", "openvino", "tflite", "coreml", "tensorrt"} <= set(options)
    assert recipe.read(REPO / "edgec.yaml").models[0].name == "digits-wide"
