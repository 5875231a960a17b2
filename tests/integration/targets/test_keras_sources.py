"""Keras models as they exist: legacy .h5/.hdf5 files written by tf.keras 2 build like .keras files, Lambda layers
are refused before anything loads the model, and OpenVINO takes TensorFlow sources through its own frontend."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import run_cli

pytest.importorskip("tensorflow", reason="TensorFlow sources: pip install 'edgec[tflite]'")

MAKE_MODELS = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tf_keras as k
folder = sys.argv[1]
k.utils.set_random_seed(0)
# an emotion-classifier-like CNN, as tf.keras 2 saved them: HDF5, compiled, BatchNorm and Dropout
m = k.Sequential([k.layers.Input((24, 24, 1), name="face"), k.layers.Conv2D(8, 3, activation="relu"),
                  k.layers.BatchNormalization(), k.layers.MaxPooling2D(), k.layers.Flatten(), k.layers.Dropout(0.3),
                  k.layers.Dense(7, activation="softmax", name="emotion")])
m.compile("adam", "categorical_crossentropy")
m.save(os.path.join(folder, "emotion_model.hdf5"))
m.save_weights(os.path.join(folder, "weights_only.h5"))
x = np.random.default_rng(0).random((4, 24, 24, 1), dtype=np.float32)
np.save(os.path.join(folder, "faces.npy"), x)
np.save(os.path.join(folder, "expected.npy"), m.predict(x, verbose=0))
# a Lambda inside a nested model: its bytecode writes a file when it runs
marker = os.path.join(folder, "lambda_ran")
payload = eval(f"lambda t: t * len(open({marker!r}, 'w').name)")
inner = k.Sequential([k.layers.Input((4,)), k.layers.Lambda(payload, name="payload")], name="inner")
outer = k.Sequential([k.layers.Input((4,)), inner, k.layers.Dense(2)])
path = os.path.join(folder, "with_lambda.h5")
outer.save(path)
os.remove(marker)  # building the model called it once
# in the form Keras 3 reads (a "__lambda__" function entry), so that loading it unsafely runs the code
import json, h5py
def keras3_lambdas(node):
    if isinstance(node, dict):
        if node.get("class_name") == "Lambda":
            config = node["config"]
            code, defaults, closure = config["function"]
            for key in ("function_type", "module", "output_shape_type", "output_shape_module"):
                config.pop(key, None)
            config["function"] = {"class_name": "__lambda__", "config": {"code": code, "defaults": defaults, "closure": closure}}
        for value in node.values():
            keras3_lambdas(value)
    elif isinstance(node, list):
        for value in node:
            keras3_lambdas(value)
with h5py.File(path, "r+") as f:
    config = json.loads(f.attrs["model_config"])
    keras3_lambdas(config)
    f.attrs["model_config"] = json.dumps(config)
import keras
keras.saving.load_model(path, safe_mode=False, compile=False)(np.ones((1, 4), np.float32))
assert os.path.exists(marker), "loading it unsafely runs the file's code"
os.remove(marker)
"""


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tf_keras", reason="writes the legacy H5 files as tf.keras 2 did")
    folder = tmp_path_factory.mktemp("h5")
    proc = subprocess.run([sys.executable, "-c", MAKE_MODELS, str(folder)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return folder


def test_legacy_hdf5_builds_for_tflite_and_matches_tf_keras_predictions(keras_files: Path, tmp_path: Path) -> None:
    from edgec.runtime_shims.litert import LiteRtRunner

    proc = run_cli("build", str(keras_files / "emotion_model.hdf5"), "--target", "tflite", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no TensorFlow banners (oneDNN, cpu_feature_guard, absl) in the build's output
    bundle = tmp_path / "emotion_model-tflite-fp32"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["source"]["format"] == "keras"
    faces, expected = np.load(keras_files / "faces.npy"), np.load(keras_files / "expected.npy")
    with LiteRtRunner(str(bundle / "model.tflite")) as runner:
        got = np.concatenate([next(iter(runner.infer({"face": faces[i:i + 1]}).values())) for i in range(len(faces))])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_h5_with_a_nested_lambda_is_refused_before_tensorflow_or_keras_loads(keras_files: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from edgec.compiler.cli import main
        code = main(["build", {str(keras_files / 'with_lambda.h5')!r}, "--target", "tflite", "--out", {str(tmp_path)!r}])
        print("loaded:", sorted(m for m in ("tensorflow", "keras", "tf_keras") if m in sys.modules))
        sys.exit(code)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Lambda layer 'payload'" in proc.stderr and "never runs" in proc.stderr
    assert "loaded: []" in proc.stdout
    assert not (keras_files / "lambda_ran").exists() and not any(tmp_path.iterdir())


def test_weights_only_h5_is_refused_naming_model_save(keras_files: Path, tmp_path: Path) -> None:
    proc = run_cli("build", str(keras_files / "weights_only.h5"), "--target", "tflite", "--out", str(tmp_path))
    assert proc.returncode == 5, proc.stderr
    assert "holds no model config" in proc.stderr and "model.save" in proc.stderr and "Traceback" not in proc.stderr


def test_h5_that_is_not_hdf5_is_an_export_error(tmp_path: Path) -> None:
    (tmp_path / "fake.h5").write_bytes(b"PK\x03\x04 not hdf5")
    proc = run_cli("build", str(tmp_path / "fake.h5"), "--target", "tflite", "--out", str(tmp_path / "out"))
    assert proc.returncode == 5 and "as an HDF5 file" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Keras model whose inputs are not in alphabetical order (OpenVINO's frontend sorts them)."""
    import keras

    folder = tmp_path_factory.mktemp("two")
    keras.utils.set_random_seed(0)
    zeta, alpha = keras.Input((8,), name="zeta"), keras.Input((6, 6, 3), name="alpha")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, padding="same")(alpha))
    probs = keras.layers.Dense(3, name="probs")(keras.layers.Concatenate()([keras.layers.Dense(5)(zeta), pooled]))
    aux = keras.layers.Dense(2, name="aux")(zeta)
    keras.Model([zeta, alpha], [probs, aux]).save(folder / "two.keras")
    rng = np.random.default_rng(2)
    np.savez(folder / "calib.npz", zeta=rng.standard_normal((16, 8), dtype=np.float32),
             alpha=rng.standard_normal((16, 6, 6, 3), dtype=np.float32))
    return folder


@pytest.mark.slow
def test_openvino_builds_keras_sources_matching_ports_by_name(two_inputs: Path, tmp_path: Path) -> None:
    """fp32 and static int8 from one CLI run (a matrix: TensorFlow loads once), each bundle checked on its own."""
    pytest.importorskip("openvino", reason="pip install 'edgec[openvino]'")
    import openvino as ov

    proc = run_cli("build", str(two_inputs / "two.keras"), "--target", "openvino", "--precision", "fp32,int8",
                   "--out", str(tmp_path), "--calib", str(two_inputs / "calib.npz"), "--int8-mode", "static")
    assert proc.returncode == 0, proc.stderr
    for precision in ("fp32", "int8"):
        bundle = tmp_path / f"two-openvino-{precision}"
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["target_details"]["route"] == "keras"
        assert manifest["parity"]["outputs"]["probs"]["cosine"] > (0.9999 if precision == "fp32" else 0.95)
        model = ov.Core().read_model(str(bundle / "model.xml"))
        shapes = {p.get_any_name(): p.get_partial_shape().to_string() for p in model.inputs}
        assert shapes == {"zeta": "[?,8]", "alpha": "[?,6,6,3]"}
        assert run_cli("verify", str(bundle)).returncode == 0


def test_onnx_target_without_tf2onnx_names_the_extra_that_installs_it(two_inputs: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "tf2onnx":
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Block())
        from edgec.compiler.cli import main
        sys.exit(main(["build", {str(two_inputs / 'two.keras')!r}, "--target", "onnx", "--out", {str(tmp_path)!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("\n") == 1 and "'tf2onnx'" in proc.stderr and "pip install 'edgec[tf2onnx]'" in proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_onnx_targets_build_keras_sources_through_tf2onnx_in_source_order(two_inputs: Path, tmp_path: Path) -> None:
    """onnx and tensorrt from one CLI run (a matrix: TensorFlow loads once), each bundle checked on its own."""
    pytest.importorskip("tf2onnx", reason="pip install 'edgec[tf2onnx]'")
    proc = run_cli("build", str(two_inputs / "two.keras"), "--target", "onnx,tensorrt", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    for target in ("onnx", "tensorrt"):
        bundle = tmp_path / f"two-{target}-fp32"
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["passes"][0]["name"] == "tf2onnx" and manifest["passes"][0]["stats"]["converter"].startswith("tf2onnx")
        assert [(s["name"], s["shape"]) for s in manifest["inputs"]] == [("zeta", ["batch", 8]), ("alpha", ["batch", 6, 6, 3])]
        assert min(o["cosine"] for o in manifest["parity"]["outputs"].values()) > 0.9999
        assert run_cli("verify", str(bundle)).returncode == 0
