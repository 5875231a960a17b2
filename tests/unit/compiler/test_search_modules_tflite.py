"""The module step on TFLite names (issue 19): TensorFlow op names sit under the Keras model's name scope
(``model_77/model.22.cv3.1.0.conv/BiasAdd``), so the scope around one op held only that op's TF ops, and the
search on YOLOv8n (tflite) spent 3 of its 8 builds keeping single layers float it had already measured."""

from __future__ import annotations

from edgec.compiler.mixed_precision import module_members
from edgec.frameworks.fidelity import LayerDivergence

LAYERS = ["model.22.cv3.1.0.conv", "model.22.cv3.1.1.conv", "model.22.cv3.1.2", "model.22.cv2.0.0.conv", "model.9.cv2.conv"]


def tflite_ranked() -> list[LayerDivergence]:
    """Two TF ops per layer (a conv and its bias add), named as the tflite target's layer report names them."""
    return [LayerDivergence(f"model_77/{layer}/{op}", "CONV_2D", layer, f"model_77/{layer}/{op}", 0.1, 0.9, 0.1)
            for layer in LAYERS for op in ("Conv2D", "BiasAdd")]


def test_one_layers_tf_ops_are_no_module_and_the_layer_names_give_one() -> None:
    ranked = tflite_ranked()
    assert module_members(ranked[0], ranked, ()) == ("model.22.cv3.1.", LAYERS[:3])  # the class branch of level 1


def test_a_module_of_one_layer_is_that_layer_not_a_module() -> None:
    ranked = [LayerDivergence(n, "Conv", "enc.0", n, 0.1, 0.9, 0.1) for n in ["/enc/0/Conv", "/enc/0/Add"]]
    assert module_members(ranked[0], ranked, ()) == ("", [])  # two ops, one layer
