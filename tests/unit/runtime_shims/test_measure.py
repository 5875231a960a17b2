"""The shim's measurement helpers: timing rounds, percentiles, noise, peak memory, parity metrics."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgec.runtime_shims import measure


def _work() -> float:
    return float(np.linalg.norm(np.arange(2000, dtype=np.float64)))


def test_time_calls_runs_warmup_then_splits_timed_runs_into_rounds() -> None:
    calls = []
    start = time.perf_counter()
    rounds = measure.time_calls(lambda: calls.append(_work()), runs=10, warmup=3, repeats=3)
    elapsed = time.perf_counter() - start
    assert len(calls) == 13
    assert [len(r) for r in rounds] == [4, 3, 3]
    assert 0 < sum(t for r in rounds for t in r) <= elapsed  # seconds, and only the timed calls inside the whole


def test_time_calls_never_makes_more_rounds_than_runs() -> None:
    assert len(measure.time_calls(_work, runs=2, warmup=0, repeats=5)) == 2


@pytest.mark.parametrize("runs,warmup,repeats", [(0, 1, 1), (5, -1, 1), (5, 1, 0)])
def test_time_calls_rejects_nonsense_counts(runs: int, warmup: int, repeats: int) -> None:
    with pytest.raises(ValueError, match="runs must be"):
        measure.time_calls(_work, runs, warmup, repeats)


def test_summary_percentiles_are_ordered_and_throughput_counts_the_batch() -> None:
    rounds = measure.time_calls(_work, runs=60, warmup=5, repeats=3)
    one = measure.summarize(measure.Timing(tuple(tuple(r) for r in rounds), batch=1))
    four = measure.summarize(measure.Timing(tuple(tuple(r) for r in rounds), batch=4))
    lat = one["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"]
    assert four["throughput_per_s"] == pytest.approx(4 * one["throughput_per_s"], rel=1e-5)
    assert one["throughput_per_s"] == pytest.approx(1000 / lat["mean"], rel=1e-4)
    noise = one["noise"]
    round_p50 = [float(np.median(r)) * 1000 for r in rounds]
    assert noise["rounds"] == 3 and noise["round_p50_ms"] == pytest.approx(round_p50, rel=1e-5)
    assert noise["spread_rel"] == pytest.approx((max(round_p50) - min(round_p50)) / float(np.median(round_p50)), rel=1e-4)
    assert noise["cv"] == pytest.approx(lat["std"] / lat["mean"], rel=1e-4)


def test_spread_reports_a_slow_round_instead_of_hiding_it() -> None:
    timing = measure.Timing(((0.001,) * 5, (0.001,) * 5, (0.002,) * 5), batch=1)
    noise = measure.summarize(timing)["noise"]
    assert noise["round_p50_ms"] == [1.0, 1.0, 2.0]
    assert noise["spread_rel"] == pytest.approx(1.0)


def test_compare_output_matches_identical_and_flags_different_outputs() -> None:
    ref = np.random.default_rng(0).standard_normal((4, 1, 10)).astype(np.float32)
    same = measure.compare_output(ref, ref.copy())
    assert same["max_abs"] == 0 and same["cosine"] == pytest.approx(1.0) and same["top1_agreement"] == 1.0
    flipped = measure.compare_output(ref, -ref)
    assert flipped["cosine"] == pytest.approx(-1.0) and flipped["top1_agreement"] < 1.0
    failures = measure.check_tolerance({"y": flipped}, {"y": {"max_abs": 0.1, "min_cosine": 0.99}})
    assert len(failures) == 2 and "cosine -1.000000 < 0.990000" in failures[0]
    assert measure.check_tolerance({}, {"y": {"min_cosine": 0.9}}) == ["output 'y' is missing"]


def test_compare_output_counts_top1_agreement_and_the_near_ties_that_bound_every_flip() -> None:
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((64, 1, 10))
    got = ref + rng.uniform(-0.2, 0.2, ref.shape)
    m = measure.compare_output(ref, got)
    flips = int(np.sum(ref.argmax(-1) != got.argmax(-1)))
    assert (m["top1_agree"], m["top1_rows"]) == (64 - flips, 64) and flips > 0
    assert m["top1_agreement"] == pytest.approx(m["top1_agree"] / 64, abs=1e-6)
    margins = np.diff(np.sort(ref[:, 0], axis=1)[:, -2:], axis=1).ravel()
    assert m["near_ties"] == int(np.sum(margins <= 2 * m["max_abs"])) and flips <= m["near_ties"] < 64


def test_compare_output_counts_every_row_of_a_batched_output() -> None:
    ref = np.zeros((3, 4, 5), np.float32)
    ref[..., 0] = 2.0
    got = ref.copy()
    got[0, 1] = [0, 3, 0, 0, 0]
    m = measure.compare_output(ref, got)
    assert (m["top1_agree"], m["top1_rows"]) == (11, 12)
    assert m["near_ties"] == 12  # every margin (2.0) is within 2 x max_abs (6.0): one flip among them


def test_embeddings_get_no_top1_counts() -> None:
    rows = np.random.default_rng(0).standard_normal((4, 1, 8))
    unit = rows / np.linalg.norm(rows, axis=-1, keepdims=True)
    assert not {"top1_agreement", "top1_agree", "near_ties"} & set(measure.compare_output(unit, unit))


def test_format_top1_prints_counts_and_reads_old_results_with_only_the_fraction() -> None:
    assert measure.format_top1({"top1_agree": 4, "top1_rows": 8, "near_ties": 5}) == "top-1 4/8 (5 near-ties)"
    assert measure.format_top1({"top1_agree": 8, "top1_rows": 8, "near_ties": 1}) == "top-1 8/8 (1 near-tie)"
    assert measure.format_top1({"top1_agreement": 0.5}, samples=8) == "top-1 4/8"
    assert measure.format_top1({"top1_agreement": 0.5}) == "top-1 50.0%"
    assert measure.format_top1({"cosine": 1.0}) == ""


def test_interleaved_calls_alternate_the_variants_round_by_round_and_time_each_run() -> None:
    order: list[str] = []
    times = measure.interleaved_calls({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                                      runs=5, warmup=1, rounds=2)
    assert [len(times["a"]), len(times["b"])] == [5, 5]
    # round 1: a warms up once then runs 3 times, then b; round 2: 2 runs each, after a warm-up
    assert order == ["a"] * 4 + ["b"] * 4 + ["a"] * 3 + ["b"] * 3
