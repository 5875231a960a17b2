"""Pruning passes (.pt2 -> .pt2) on tiny torch models built inline, and MAC counting of ONNX graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgec.compiler import flops
from edgec.compiler.importers.torch import TorchImporter
from edgec.compiler.passes._torch_edit import finetune_options, load_for_editing
from edgec.compiler.passes.base import PassContext, make_pass
from edgec.core import errors
from edgec.core.types import ModelArtifact
from edgec.frameworks.torch_utils import safe_load_pt2


class Branchy(nn.Module):
    """Conv-BN stem, a residual block, a concat, a transposed conv, layer norm and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.res = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.side = nn.Conv2d(16, 8, 1)
        self.up = nn.ConvTranspose2d(24, 12, 2, stride=2)
        self.norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = torch.relu(y + self.res(y))
        y = torch.cat([y, self.side(y)], dim=1)
        y = self.up(y).mean(dim=(2, 3))
        return self.head(self.norm(y))


class HardCodedView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).view(-1, 128))


def _save(module: nn.Module, path: Path, shape: tuple[int, ...] = (2, 3, 8, 8), dynamic: bool = True) -> ModelArtifact:
    torch.manual_seed(0)
    module = module.eval()
    for layer in module.modules():  # non-trivial batch-norm statistics
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=64)}} if dynamic else None
    ep = torch.export.export(module, (torch.randn(shape),), dynamic_shapes=shapes)
    torch.export.save(ep, str(path))
    return TorchImporter()._load_pt2(path, None).artifact  # type: ignore[arg-type]


@pytest.fixture
def branchy(tmp_path: Path) -> tuple[nn.Module, ModelArtifact]:
    torch.manual_seed(0)
    module = Branchy()
    return module, _save(module, tmp_path / "branchy.pt2")


def _run(name: str, options: dict, artifact: ModelArtifact, work: Path):
    work.mkdir(parents=True, exist_ok=True)
    return make_pass(name, options).run(artifact, PassContext(work))


def test_lifted_module_computes_exactly_what_the_program_did(branchy) -> None:
    module, artifact = branchy
    _, lifted, _ = load_for_editing(artifact.path)
    kinds = {type(m).__name__ for m in lifted.modules()}
    assert {"Conv2d", "BatchNorm2d", "ConvTranspose2d", "LayerNorm", "Linear"} <= kinds
    assert "stem.0.weight" in dict(lifted.named_parameters())  # same state-dict names as the source
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(lifted(x), module(x))


def test_structured_pruning_cuts_params_and_macs_and_keeps_the_interface(branchy, tmp_path: Path) -> None:
    _, artifact = branchy
    result = _run("prune_structured", {"ratio": 0.5, "round_to": 1}, artifact, tmp_path / "w")
    stats = result.stats
    assert stats["after"]["params"] < 0.5 * stats["before"]["params"]
    assert stats["after"]["macs"] < 0.5 * stats["before"]["macs"]
    assert stats["channels"]["head"] == 5  # the output layer keeps its features
    assert stats["channels"]["stem.0"] == 8 and stats["channels"]["res.0"] == 8
    assert [s.name for s in result.artifact.inputs] == ["x"] and [s.name for s in result.artifact.outputs] == ["output"]
    assert isinstance(result.artifact.inputs[0].shape[0], str)  # the batch dim stays dynamic
    pruned = safe_load_pt2(result.artifact.path).module()
    assert tuple(pruned(torch.randn(7, 3, 8, 8)).shape) == (7, 5)


def test_structured_macs_match_the_onnx_count_of_the_exported_model(branchy, tmp_path: Path) -> None:
    _, artifact = branchy
    pruned = _run("prune_structured", {"ratio": 0.3, "round_to": 1}, artifact, tmp_path / "p")
    onnx_art = _run("export_onnx", {}, pruned.artifact, tmp_path / "o").artifact
    cost = flops.file_cost(onnx_art.path)
    assert cost.macs == pruned.stats["after"]["macs"] and not cost.uncounted


def test_round_to_keeps_the_nearest_multiple_and_spares_small_layers(branchy, tmp_path: Path) -> None:
    _, artifact = branchy
    stats = _run("prune_structured", {"ratio": 0.3, "round_to": 4}, artifact, tmp_path / "w").stats
    assert stats["channels"]["stem.0"] == 12  # 16 * 0.7 = 11.2 -> 12, not rounded down to 8
    assert all(c % 4 == 0 for name, c in stats["channels"].items() if name != "head")
    default = _run("prune_structured", {"ratio": 0.3}, artifact, tmp_path / "d").stats
    assert default["channels"]["stem.0"] == 16 and default["after"]["params"] == default["before"]["params"]


def test_ignored_layer_keeps_its_channels(branchy, tmp_path: Path) -> None:
    _, artifact = branchy
    stats = _run("prune_structured", {"ratio": 0.5, "round_to": 1, "ignore": ["side"]}, artifact, tmp_path / "w").stats
    assert stats["channels"]["side"] == 8


def test_unknown_ignored_layer_is_a_config_error(branchy, tmp_path: Path) -> None:
    _, artifact = branchy
    with pytest.raises(errors.ConfigError, match="no module named 'nope'"):
        _run("prune_structured", {"ratio": 0.5, "ignore": ["nope"]}, artifact, tmp_path / "w")


def test_hard_coded_channel_count_fails_with_a_hint(tmp_path: Path) -> None:
    artifact = _save(HardCodedView(), tmp_path / "view.pt2", shape=(2, 1, 4, 4))
    with pytest.raises(errors.UnsupportedError) as info:
        _run("prune_structured", {"ratio": 0.5, "round_to": 1}, artifact, tmp_path / "w")
    assert "torch.flatten" in info.value.one_line()
    assert not (tmp_path / "w" / "model.pt2").exists()


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1])
def test_ratio_outside_zero_one_is_rejected(ratio: float) -> None:
    with pytest.raises(errors.ConfigError, match="ratio"):
        make_pass("prune_structured", {"ratio": ratio})


def test_prune_refuses_onnx_models(conv_onnx: Path, tmp_path: Path) -> None:
    from edgec.frameworks import onnx_utils

    with pytest.raises(errors.UnsupportedError, match="takes pt2"):
        _run("prune_unstructured", {"ratio": 0.5}, onnx_utils.artifact_from_file(conv_onnx), tmp_path / "w")


def test_unstructured_zeroes_the_smallest_weights_per_layer(branchy, tmp_path: Path) -> None:
    module, artifact = branchy
    result = _run("prune_unstructured", {"ratio": 0.6}, artifact, tmp_path / "w")
    stats = result.stats
    assert all(abs(s - 0.6) < 0.01 for s in stats["layers"].values())
    assert stats["after"]["params"] == stats["before"]["params"] and stats["after"]["macs"] == stats["before"]["macs"]
    assert stats["after"]["compressed_weight_bytes"] < 0.8 * stats["before"]["compressed_weight_bytes"]
    state = safe_load_pt2(result.artifact.path).state_dict
    original = module.res[0].weight.detach()
    kept = state["res.0.weight"] != 0
    assert torch.equal(state["res.0.weight"][kept], original[kept])  # survivors untouched
    assert original[kept].abs().min() >= original[~kept].abs().max()  # the zeros were the smallest


def test_onnx_sparsity_is_reported_after_unstructured_pruning(branchy, tmp_path: Path) -> None:
    _, artifact = branchy
    sparse = _run("prune_unstructured", {"ratio": 0.5}, artifact, tmp_path / "w").artifact
    onnx_art = _run("export_onnx", {}, sparse, tmp_path / "o").artifact
    assert 0.45 < flops.file_cost(onnx_art.path).sparsity < 0.55


FINETUNE = '''
import torch

def finetune(module):
    with torch.no_grad():
        module.head.bias.fill_(7.0)
    return module

def broken(module):
    raise RuntimeError("out of data")

def not_a_module(module):
    return 3
'''


@pytest.fixture
def finetune_file(tmp_path: Path) -> Path:
    path = tmp_path / "tune.py"
    path.write_text(FINETUNE)
    return path


@pytest.mark.parametrize("name", ["prune_structured", "prune_unstructured"])
def test_finetune_callable_result_is_what_gets_exported(branchy, tmp_path: Path, finetune_file: Path, name: str) -> None:
    _, artifact = branchy
    result = _run(name, {"ratio": 0.3, "finetune": f"{finetune_file}:finetune"}, artifact, tmp_path / "w")
    assert torch.all(safe_load_pt2(result.artifact.path).state_dict["head.bias"] == 7.0)


@pytest.mark.parametrize(("func", "error", "text"), [
    ("broken", errors.ExportError, "raised RuntimeError: out of data"),
    ("not_a_module", errors.ExportError, "returned int"),
    ("missing", errors.ConfigError, "expected finetune\\(module\\) -> module"),
])
def test_bad_finetune_callable_fails_with_one_clear_error(branchy, tmp_path: Path, finetune_file: Path, func: str,
                                                         error: type, text: str) -> None:
    _, artifact = branchy
    with pytest.raises(error, match=text):
        _run("prune_structured", {"ratio": 0.3, "finetune": f"{finetune_file}:{func}"}, artifact, tmp_path / "w")


def test_finetune_options_change_when_the_file_changes(finetune_file: Path) -> None:
    first = finetune_options(f"{finetune_file}:finetune")
    finetune_file.write_text(FINETUNE + "\n# edited\n")
    second = finetune_options(f"{finetune_file}:finetune")
    assert first["finetune"] == second["finetune"] and first["finetune_sha256"] != second["finetune_sha256"]
    assert finetune_options(None) == {}
    with pytest.raises(errors.ConfigError, match="bad --finetune"):
        finetune_options("no-colon")


# --- MAC counting of ONNX graphs -----------------------------------------------------------------


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _vi(name: str, shape: list) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_conv_and_gemm_macs_of_the_tiny_cnn(conv_onnx: Path) -> None:
    cost = flops.file_cost(conv_onnx)
    assert cost.macs_by_op == {"Conv": 8 * 8 * 8 * 3 * 3 * 3, "Gemm": 8 * 10}
    assert cost.params == 8 * 27 + 8 + 80 + 10 and cost.dims == {"batch": 1}
    assert flops.file_cost(conv_onnx, {"batch": 4}).macs == 4 * cost.macs


def test_grouped_conv_transposed_conv_and_batched_matmul_macs() -> None:
    w = np.ones((8, 2, 3, 3), np.float32)  # groups=2: 4 input channels
    wt = np.ones((8, 3, 2, 2), np.float32)  # ConvTranspose 8 -> 3, stride 2
    b = np.ones((5, 6), np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], group=2, pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["c", "wt"], ["t"], strides=[2, 2]),
        helper.make_node("MatMul", ["a", "b"], ["m"]),
        helper.make_node("Gemm", ["g", "b"], ["gy"], transA=1),
    ]
    model = _model(nodes, [_vi("x", ["n", 4, 6, 6]), _vi("a", [2, 7, 5]), _vi("g", [5, 9])],
                   [_vi("t", None), _vi("m", None), _vi("gy", None)], {"w": w, "wt": wt, "b": b})
    cost = flops.model_cost(model)
    assert cost.macs_by_op == {"Conv": 8 * 36 * 2 * 9, "ConvTranspose": 8 * 36 * 3 * 4, "MatMul": 2 * 7 * 6 * 5,
                               "Gemm": 9 * 6 * 5}
    assert cost.macs == sum(cost.macs_by_op.values()) and cost.sparsity == 0.0


def test_unknown_shapes_are_listed_not_guessed() -> None:
    nodes = [helper.make_node("MatMul", ["a", "b"], ["m"], name="mm")]
    model = _model(nodes, [_vi("a", [2, 3]), _vi("b", None)], [_vi("m", None)], {})
    cost = flops.model_cost(model)
    assert cost.macs == 0 and cost.uncounted == ["mm"]


def test_sparsity_counts_zeros_in_weight_tensors_only() -> None:
    w = np.zeros((4, 4), np.float32)
    w[0] = 1.0
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["y"])]
    model = _model(nodes, [_vi("x", [1, 4])], [_vi("y", None)], {"w": w, "c": np.zeros(4, np.float32)})
    assert flops.model_cost(model).sparsity == 0.75
