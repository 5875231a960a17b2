"""The digits CNN pruned at 30% and 50% of its channels: smaller, faster, and as accurate after a fine-tune.

Latency: the pruned and unpruned bundles are timed in the same process, interleaved (so load changes on a
shared CI machine hit both alike), one thread, on the whole held-out split (450 images) per call, and the
medians of many repetitions are compared with a generous margin (measured ratios are about 0.45 and 0.4,
the test asks for under 0.9). MACs, the deterministic measure of the same thing, are asserted exactly.
With the default ``round_to=16`` the layers keep 16/48 channels at 30% and 16/32 at 50% (of 32/64).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgec.benchmarks.zoo import digits
from edgec.compiler import flops
from edgec.compiler.config import BuildConfig
from edgec.compiler.importers.torch import TorchImporter
from edgec.compiler.passes.base import PassContext, make_pass
from edgec.compiler.pipeline import build
from edgec.core.bundle import load_manifest
from edgec.core.errors import MissingDependencyError
from edgec.frameworks.torch_utils import safe_load_pt2
from edgec.runtime_shims.ort import OrtRunner
from edgec.targets.base import TARGETS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FINETUNE = "edgec.benchmarks.zoo.digits_finetune:finetune"
RATIOS = (0.3, 0.5)


def torch_accuracy(pt2: Path, eval_npz: Path) -> float:
    data = np.load(eval_npz)
    with torch.no_grad():
        logits = safe_load_pt2(pt2).module()(torch.from_numpy(data["x"])).numpy()
    return digits.accuracy(logits, data["labels"])


def prune(pt2: Path, work: Path, ratio: float, finetune: str | None) -> tuple[Path, dict]:
    work.mkdir(parents=True)
    artifact = TorchImporter()._load_pt2(pt2, None).artifact  # type: ignore[arg-type]
    result = make_pass("prune_structured", {"ratio": ratio, "finetune": finetune}).run(artifact, PassContext(work))
    return result.artifact.path, result.stats


@pytest.fixture(scope="module")
def pruned(digits_assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    work = tmp_path_factory.mktemp("pruned")
    models = {"unpruned": (digits_assets["pt2"], {})}
    for ratio in RATIOS:
        models[f"raw{ratio}"] = prune(digits_assets["pt2"], work / f"raw{ratio}", ratio, None)
        models[f"tuned{ratio}"] = prune(digits_assets["pt2"], work / f"tuned{ratio}", ratio, FINETUNE)
    return models


@pytest.fixture(scope="module")
def bundles(pruned: dict[str, tuple[Path, dict]], digits_assets: dict[str, Path],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bundles")
    keys = ["unpruned", *(f"tuned{r}" for r in RATIOS)]
    return {key: build(BuildConfig(source=str(pruned[key][0]), name=key, out=out, calib=digits_assets["calib"])).bundle_dir
            for key in keys}


def test_fine_tuned_pruned_models_stay_within_one_and_a_half_points(pruned, digits_assets: dict[str, Path]) -> None:
    base = torch_accuracy(pruned["unpruned"][0], digits_assets["eval"])
    assert base > 0.95
    for ratio in RATIOS:
        raw = torch_accuracy(pruned[f"raw{ratio}"][0], digits_assets["eval"])
        tuned = torch_accuracy(pruned[f"tuned{ratio}"][0], digits_assets["eval"])
        print(f"ratio {ratio}: accuracy unpruned {base:.4f}, pruned {raw:.4f}, fine-tuned {tuned:.4f}")
        assert tuned >= base - 0.015, (ratio, base, raw, tuned)


def test_params_and_macs_go_down_with_the_ratio(pruned, bundles: dict[str, Path]) -> None:
    costs = {key: flops.file_cost(bundle / "model.onnx") for key, bundle in bundles.items()}
    for key, cost in costs.items():
        print(f"{key}: params {cost.params}, MACs {cost.macs}")
    assert costs["unpruned"].macs > 2 * costs["tuned0.3"].macs > 2 * 1.2 * costs["tuned0.5"].macs
    assert costs["unpruned"].params > 2 * costs["tuned0.3"].params > 2 * 1.2 * costs["tuned0.5"].params
    for ratio in RATIOS:
        stats = pruned[f"tuned{ratio}"][1]
        assert stats["after"]["macs"] == costs[f"tuned{ratio}"].macs  # pass stats agree with the ONNX count
        assert stats["before"]["macs"] == costs["unpruned"].macs


def _median_latencies(models: dict[str, Path], feed: dict[str, np.ndarray], rounds: int = 60) -> dict[str, float]:
    times: dict[str, list[float]] = {key: [] for key in models}
    runners = {key: OrtRunner(str(path), threads=1) for key, path in models.items()}
    for runner in runners.values():
        runner.activate()
        for _ in range(5):
            runner.infer(feed)
    try:
        for _ in range(rounds):
            for key, runner in runners.items():
                start = time.perf_counter()
                runner.infer(feed)
                times[key].append(time.perf_counter() - start)
    finally:
        for runner in runners.values():
            runner.deactivate()
    return {key: float(np.median(t)) for key, t in times.items()}


def test_pruned_bundles_run_faster_in_the_same_run(bundles: dict[str, Path], digits_assets: dict[str, Path]) -> None:
    feed = {"x": np.load(digits_assets["eval"])["x"]}
    latency = _median_latencies({key: bundle / "model.onnx" for key, bundle in bundles.items()}, feed)
    print("median latency on 450 images (ms): " + ", ".join(f"{k} {v * 1e3:.3f}" for k, v in latency.items()))
    for ratio in RATIOS:
        assert latency[f"tuned{ratio}"] < 0.9 * latency["unpruned"], latency


def test_pruned_bundle_keeps_accuracy_and_parity(bundles: dict[str, Path], digits_assets: dict[str, Path]) -> None:
    data = np.load(digits_assets["eval"])
    with OrtRunner(str(bundles["tuned0.5"] / "model.onnx")) as runner:
        acc = digits.accuracy(runner.infer({"x": data["x"]})["output"], data["labels"])
    assert acc >= torch_accuracy(digits_assets["pt2"], digits_assets["eval"]) - 0.015
    assert load_manifest(bundles["tuned0.5"]).parity["outputs"]["output"]["cosine"] > 0.9999


@pytest.mark.parametrize("target", TARGETS.names())
def test_pruned_model_builds_for_every_target(target: str, pruned, digits_assets: dict[str, Path], tmp_path: Path) -> None:
    try:
        TARGETS.get(target)().check_available()
    except MissingDependencyError as exc:
        pytest.skip(f"{target} runtime not installed: {exc.one_line()}")
    outcome = build(BuildConfig(source=str(pruned["tuned0.5"][0]), target=target, out=tmp_path, calib=digits_assets["calib"]))
    manifest = outcome.manifest
    assert (outcome.bundle_dir / manifest.model_file).exists()
    if manifest.parity.get("measured"):
        assert min(m["cosine"] for m in manifest.parity["outputs"].values()) > 0.9999
