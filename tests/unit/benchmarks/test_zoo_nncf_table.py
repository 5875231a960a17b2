"""The table of ``benchmarks/zoo_nncf.py``: a line per tool per model with every column, a missed budget said."""

from __future__ import annotations

from edgec.benchmarks import zoo_nncf


def test_a_comparison_row_has_every_column_and_says_when_a_tool_missed_its_budget() -> None:
    met = zoo_nncf.Side(0.998, ["lstm"], 5.7, 3.2, 294.0, 2362.0, 0)
    missed = zoo_nncf.Side(0.582, [], 1.6, 1.1, 14.0, 470.0, 7, "accuracy: best 0.582")
    row = zoo_nncf.Comparison("m", "embedding_cosine", 0.01, 4, zoo_nncf.Side(0.741, [], 1.5, 1.0, 20.0, 500.0, 0),
                              met, missed)
    lines = zoo_nncf.format_table([row]).splitlines()
    header, body = lines[0], lines[2:]
    assert len(body) == 3 and all(line.count("|") == header.count("|") for line in body)
    assert body[0] == "| m | embedding_cosine (0.01) | naive int8 | 0.741 | 0 of 4 | 1.50 | 1.00 | 20 | 500 |"
    assert body[1] == "| | | edgec --max-drop | 0.998 | 1 of 4 | 5.70 | 3.20 | 294 | 2362 |"
    assert body[2].startswith("| | | nncf accuracy control | exit 7, best 0.582 | 0 of 4 | 1.60 |")


def test_a_search_that_wrote_no_bundle_shows_its_best_on_eval_and_no_layer_count() -> None:
    failed = zoo_nncf.Side(None, [], None, None, 16.0, 458.0, 7, "could not meet", eval_score=0.914, met=False)
    unmet = zoo_nncf.Side(0.938, ["a", "b"], 3.2, 17.9, 16.0, 395.0, 0, None, eval_score=0.969, met=False)
    row = zoo_nncf.Comparison("m", "vad_decision", 0.05, 7, zoo_nncf.Side(0.859, ["a"], 0.8, 0.3, 9.0, 447.0, 0),
                              failed, unmet)
    body = zoo_nncf.format_table([row]).splitlines()[2:]
    assert body[1] == "| | | edgec --max-drop | exit 7, best 0.914 on eval, no bundle | - | - | - | 16 | 458 |"
    assert body[2] == "| | | nncf accuracy control | missed on eval (0.969): 0.938 | 2 of 7 | 3.20 | 17.90 | 16 | 395 |"
