"""Per-layer divergence and mixed precision under a budget, on a model with one known-fragile layer: the in-process checks (the builds are in tests/integration/compiler/test_fidelity.py)."""

from __future__ import annotations

import pytest

from edgec.core import errors


def test_targets_that_cannot_run_here_are_refused_with_the_ones_that_can() -> None:
    from edgec.compiler.pipeline import check_layer_support, get_target

    with pytest.raises(errors.UnsupportedError, match=r"coreml target does not offer; targets that do: executorch, onnx, openvino, tensorrt, tflite"):
        check_layer_support(get_target("coreml"), "edgec debug")
    check_layer_support(get_target("openvino"), "edgec debug")  # no error
