"""Stateful PyTorch models (issue 18): every target's bundle of a torch source names its inputs and outputs
as the source's signature does, and calibration data keyed by those names is taken.

The model is a tiny streaming LSTM, ``forward(self, x, h, c)`` with the initial states as inputs. Before,
its openvino bundle answered to ``['x', '10', '12']``: compiling the IR merges the names of the ``Unsqueeze``
and ``Slice`` ops it removes into the state inputs' ports, and the bundled runner took ``get_any_name()``
of the compiled ports, so every build died with ``feed does not match the model inputs``. A state given as
one tuple argument (``forward(self, x, state)``) or returned as a nested tuple (``y, (h, c)``) crashed
the FP32 reference with exit 1; both now build, their leaves named as ``torch.export`` names them
(``state_0``, ``state_1``) and as ``output_names`` gives them, in flattening order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core.bundle import load_manifest
from edgec.runtime_shims.runners import open_runner
from tests.support.cli import run_cli

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow

MODELS = '''
import torch
from torch import nn


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.head = nn.LSTM(4, 6, batch_first=True), nn.Linear(6, 3)

    def forward(self, x, h, c):
        y, (hn, cn) = self.lstm(x, (h, c))
        return self.head(y), hn, cn


class TupleState(Flat):
    def forward(self, x, state: tuple[torch.Tensor, torch.Tensor]):
        y, (hn, cn) = self.lstm(x, state)
        return self.head(y), (hn, cn)


def _example():
    torch.manual_seed(0)
    return torch.randn(1, 5, 4), torch.zeros(1, 1, 6), torch.zeros(1, 1, 6)


def flat():
    torch.manual_seed(0)
    return Flat(), _example(), {"output_names": ["y", "hn", "cn"]}


def tuple_state():
    torch.manual_seed(0)
    x, h, c = _example()
    return TupleState(), (x, (h, c)), {"output_names": ["y", "hn", "cn"]}
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("torch-state")
    (folder / "stateful.py").write_text(MODELS)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 5, 4)).astype(np.float32)
    h, c = ((rng.standard_normal((8, 1, 1, 6)) * 0.5).astype(np.float32) for _ in range(2))
    np.savez(folder / "flat.npz", x=x, h=h, c=c)
    np.savez(folder / "tuple.npz", x=x, state_0=h, state_1=c)
    return folder


def _build(models: Path, factory: str, target: str, precision: str, calib: str | None) -> Path:
    config = BuildConfig(source=f"{models / 'stateful.py'}:{factory}", target=target, precision=precision,
                         calib=models / calib if calib else None, out=models / f"{factory}-{target}-{precision}")
    return build(config).bundle_dir


def _torch_outputs(models: Path, factory: str, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("stateful_reference", models / "stateful.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = getattr(module, factory)()[0].eval()
    args = (x, h, c) if factory == "flat" else (x, (h, c))
    with torch.no_grad():
        out = net(*torch.utils._pytree.tree_map(torch.from_numpy, args))
    return [t.numpy() for t in torch.utils._pytree.tree_leaves(out)]


def _names(bundle: Path) -> tuple[list[str], list[str]]:
    manifest = load_manifest(bundle)
    return [s["name"] for s in manifest.inputs], [s["name"] for s in manifest.outputs]


def _check_runs_by_name(models: Path, bundle: Path, factory: str, inputs: list[str]) -> None:
    """The bundled runner takes the state by its names and gives the torch module's outputs."""
    data = np.load(models / ("flat.npz" if factory == "flat" else "tuple.npz"))
    feed = {name: data[name][3] for name in inputs}
    runner = open_runner(str(bundle), load_manifest(bundle).model_dump(mode="json"))
    with runner:
        assert sorted(runner.input_names) == sorted(inputs)  # tflite signatures list them sorted
        got = runner.infer(feed)
    expected = _torch_outputs(models, factory, *(feed[n] for n in inputs))
    for name, want in zip(["y", "hn", "cn"], expected):
        np.testing.assert_allclose(got[name], want, atol=0.05)


def test_openvino_int8_bundle_of_lstm_with_state_inputs_takes_calibration_and_feeds_by_their_names(models: Path) -> None:
    out = models / "cli"
    proc = run_cli("build", f"{models / 'stateful.py'}:flat", "--target", "openvino", "--precision", "int8",
                   "--calib", str(models / "flat.npz"), "--out", str(out), env={"EDGEC_CACHE_DIR": str(models / "cache")})
    assert proc.returncode == 0, proc.stderr
    # nothing but edgec's own lines: no decoder tracebacks, no torch warnings about nn.LSTM's weights
    assert not [line for line in proc.stderr.splitlines() if line.strip()], proc.stderr
    bundle = out / "stateful-openvino-int8"
    assert _names(bundle) == (["x", "h", "c"], ["y", "hn", "cn"])
    import openvino as ov  # a user's own OpenVINO code on the IR sees only the source's names

    compiled = ov.Core().compile_model(str(bundle / "model.xml"), "CPU")
    assert [port.get_any_name() for port in compiled.inputs] == ["x", "h", "c"]
    assert [port.get_names() for port in compiled.outputs] == [{"y"}, {"hn"}, {"cn"}]
    assert (load_manifest(bundle).calibration or {})["samples"] == 8
    _check_runs_by_name(models, bundle, "flat", ["x", "h", "c"])


@pytest.mark.parametrize("target", ["openvino", "onnx", "tflite"])
def test_tuple_state_input_and_nested_tuple_output_build_with_flattened_names(models: Path, target: str) -> None:
    bundle = _build(models, "tuple_state", target, "fp32", None)
    assert _names(bundle) == (["x", "state_0", "state_1"], ["y", "hn", "cn"])
    _check_runs_by_name(models, bundle, "tuple_state", ["x", "state_0", "state_1"])


def test_tuple_state_input_calibrates_by_its_flattened_names(models: Path) -> None:
    bundle = _build(models, "tuple_state", "onnx", "int8", "tuple.npz")
    assert _names(bundle)[0] == ["x", "state_0", "state_1"]
    assert (load_manifest(bundle).calibration or {})["samples"] == 8


def test_executorch_int8_calibrates_and_reexports_a_tuple_state_input(models: Path) -> None:
    pytest.importorskip("executorch", reason="pip install 'edgec[executorch]'")
    bundle = _build(models, "tuple_state", "executorch", "int8", "tuple.npz")
    assert _names(bundle) == (["x", "state_0", "state_1"], ["y", "hn", "cn"])
    assert (load_manifest(bundle).calibration or {})["samples"] == 8
    _check_runs_by_name(models, bundle, "tuple_state", ["x", "state_0", "state_1"])
