"""``nncf.quantize`` for an ``openvino.Model`` with its statistics served from, and added to, a kept store
(:mod:`edgec.targets._openvino_reuse`).

nncf 3.4's ``quantize`` has no statistics cache for post-training quantization (``statistics_path`` is for
weight compression only), but its pipeline runs step by step (``Pipeline.get_statistic_points_for_step``,
``run_step``) and its tensor collectors take a value instead of collecting one (``TensorCollector.set_cache``,
what nncf's own statistics loading uses). So this runs ``nncf.openvino.quantization.quantize_model.quantize_impl``'s
steps (``native_quantize_impl``: the same pipeline, graph, steps, weight compression and rt_info) with each step's
statistic points looked up in the store first. A point is keyed by its pipeline step, the step's model (the
first step's is the store's model; a later one, after SmoothQuant, is named by its serialized bytes), its
tensor (node, port, input or output) and the reducers and aggregators that make its value; only the points not
in the store are collected, usually none after the first candidate of a search (keeping ops in float removes
statistic points, it adds none; SmoothQuant, which takes no ignored scope, gives every candidate the same
model). A model with ``If`` ops, or an nncf whose internals moved, goes through ``nncf.quantize`` itself.
Bundles are byte-identical to ``nncf.quantize``'s (tests/integration/targets/test_openvino_reuse.py).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from edgec.targets import _openvino_reuse


def quantize(nncf: Any, model: Any, dataset: Any, kwargs: dict[str, Any], kept: dict[Hashable, Any] | None) -> Any:
    """``nncf.quantize(model, dataset, **kwargs)``; with ``kept`` (a store for this model, calibration set,
    method and options), statistics taken from it where present and the new ones added."""
    steps = _nncf_steps() if kept is not None else None
    if kept is None or steps is None or steps["get_number_if_op"](model) > 0:
        _openvino_reuse.count_collection()
        return nncf.quantize(model, dataset, **kwargs)
    advanced = steps["update_advanced"](kwargs.get("advanced_parameters"), dataset)
    model = steps["remove_friendly_name_duplicates"](model)
    options = {"mode": None, "preset": kwargs.get("preset"), "target_device": nncf.TargetDevice.ANY,
               "subset_size": kwargs.get("subset_size", 300), "fast_bias_correction": kwargs.get("fast_bias_correction", True),
               "model_type": kwargs.get("model_type"), "ignored_scope": kwargs.get("ignored_scope"), "advanced_parameters": advanced}
    pipeline = steps["create_ptq_pipeline"](**options)  # what PostTrainingQuantization runs
    graph = steps["GraphConverter"].create_nncf_graph(model)
    steps["warn_batchwise"](graph, advanced, options["model_type"], steps["NO_BATCH_AXIS"])
    quantized = run_pipeline(steps, pipeline, model, graph, dataset, kept)
    if steps["is_weight_compression_needed"](advanced):
        steps["compress_quantize_weights_transformation"](quantized)
    steps["dump_parameters"](quantized, {
        "preset": options["preset"], "target_device": options["target_device"].value, "subset_size": options["subset_size"],
        "fast_bias_correction": options["fast_bias_correction"], "model_type": options["model_type"],
        "ignored_scope": options["ignored_scope"], "advanced_parameters": steps["convert_to_dict_recursively"](advanced),
    })
    return quantized


def run_pipeline(steps: dict[str, Any], pipeline: Any, model: Any, graph: Any, dataset: Any, kept: dict[Hashable, Any]) -> Any:
    """nncf's ``Pipeline.run_from_step(model, dataset, graph)`` with each step's statistics from :func:`fill`. The
    first step's model is the one given (the store's key names it); a later step's model (after SmoothQuant) is
    named by its serialized bytes, so its statistics are shared only by candidates whose earlier steps gave the
    very same model."""
    count = len(pipeline._remove_unsupported_algorithms(steps["get_backend"](model)))
    for index in range(count):
        graph = graph if graph is not None else steps["build_graph"](model)
        points = pipeline.get_statistic_points_for_step(index, model, graph)
        fill(points, model, graph, dataset, kept, (index, fingerprint(model) if index else None))
        model, graph = pipeline.run_step(index, points, model, graph), None
    return model


def fingerprint(model: Any) -> str:
    """sha256 of the model's IR (``model.xml`` and ``model.bin`` as OpenVINO serializes it)."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        xml, weights = Path(tmp) / "m.xml", Path(tmp) / "m.bin"
        ov.serialize(model, str(xml), str(weights))
        digest = hashlib.sha256(xml.read_bytes())
        with open(weights, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def fill(points: Any, model: Any, graph: Any, dataset: Any, kept: dict[Hashable, Any], step: Hashable = None) -> int:
    """Give every tensor collector of ``points`` its value: from ``kept`` where there (under ``step``, the
    pipeline step and its model), else collected (in one pass over ``dataset``, only the points not kept) and
    added to ``kept``. Returns how many were collected."""
    from nncf.common.tensor_statistics.statistic_point import StatisticPointsContainer
    from nncf.quantization.algorithms.pipeline import collect_statistics

    missing: dict[int, Any] = {}
    new = []
    for _, point, collector in points.get_tensor_collectors():
        key = (step, point_key(point, collector))
        if key in kept:
            collector.set_cache(kept[key])  # nncf hands out a copy of it on every get_statistics
        else:
            missing[id(point)] = point
            new.append((key, collector))
    if not new:
        return 0
    container = StatisticPointsContainer()
    for point in missing.values():
        container.add_statistic_point(point)
    collect_statistics(container, model, graph, dataset)
    _openvino_reuse.count_collection()
    for key, collector in new:
        kept[key] = collector.get_statistics()
    return len(new)


def point_key(point: Any, collector: Any) -> Hashable:
    """What makes a statistic's value, given the model and samples: its tensor and its reducers and aggregators
    (their hashes: class, axes, quantiles, sample count, as nncf's own aggregator merges collectors by)."""
    target = point.target_point
    branches = tuple(sorted(collector.aggregators))
    kwargs = tuple(sorted(getattr(collector, "_stat_container_kwargs_map", {}).items()))
    container = getattr(getattr(collector, "_stat_container", None), "__name__", None)
    return (type(target).__name__, target.target_node_name, str(target.type), target.port_id, branches, kwargs, container)


def _nncf_steps() -> dict[str, Any] | None:
    """The nncf internals :func:`quantize` runs, or None when this nncf no longer has them where 3.4 has them."""
    try:
        from nncf.common.factory import build_graph
        from nncf.common.utils.backend import get_backend
        from nncf.openvino.graph.metatypes.groups import OPERATIONS_OUTPUT_HAS_NO_BATCH_AXIS
        from nncf.openvino.graph.model_utils import remove_friendly_name_duplicates
        from nncf.openvino.graph.nncf_graph_builder import GraphConverter
        from nncf.openvino.graph.node_utils import get_number_if_op
        from nncf.openvino.quantization.backend_parameters import is_weight_compression_needed
        from nncf.openvino.rt_info import dump_parameters
        from nncf.quantization.advanced_parameters import convert_to_dict_recursively
        from nncf.quantization.algorithms.post_training.pipeline import create_ptq_pipeline
        from nncf.quantization.quantize_model import (
            _update_advanced_quantization_parameters,
            warning_model_no_batchwise_support,
        )
        from openvino._offline_transformations import compress_quantize_weights_transformation
    except ImportError:
        return None
    return {"NO_BATCH_AXIS": OPERATIONS_OUTPUT_HAS_NO_BATCH_AXIS, "remove_friendly_name_duplicates": remove_friendly_name_duplicates,
            "GraphConverter": GraphConverter, "get_number_if_op": get_number_if_op,
            "is_weight_compression_needed": is_weight_compression_needed, "dump_parameters": dump_parameters,
            "convert_to_dict_recursively": convert_to_dict_recursively, "create_ptq_pipeline": create_ptq_pipeline,
            "build_graph": build_graph, "get_backend": get_backend,
            "update_advanced": _update_advanced_quantization_parameters, "warn_batchwise": warning_model_no_batchwise_support,
            "compress_quantize_weights_transformation": compress_quantize_weights_transformation}
