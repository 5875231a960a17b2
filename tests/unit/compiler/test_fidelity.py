"""Per-layer divergence and mixed precision under a budget, on a model with one known-fragile layer.

The model is six 3x3 convolutions; conv2's output channel 0 is scaled up 300x and conv3 scales that
input channel back down. FP32 does not care, but static INT8 gives the tensor between them one
per-tensor range that the outlier channel fills, so every other channel is crushed to a few levels:
the error appears in conv3, the layer that reads the outlier-heavy activation.

The checks that build nothing; the builds are in tests/integration/compiler/test_fidelity.py."""

from __future__ import annotations

import pytest

from edgec.core import errors


def test_targets_that_cannot_run_here_are_refused_with_the_ones_that_can() -> None:
    from edgec.compiler.pipeline import check_layer_support, get_target

    with pytest.raises(errors.UnsupportedError, match=r"coreml target does not offer; targets that do: executorch, onnx, openvino, tensorrt, tflite"):
        check_layer_support(get_target("coreml"), "edgec debug")
    check_layer_support(get_target("openvino"), "edgec debug")  # no error
