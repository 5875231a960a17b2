"""``python -m edgec.benchmarks.compare``: discovers ``*_vs_*`` modules, one table of ratios, skips with reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.benchmarks import compare

SIZES_MODULE = '''
"""Compares file sizes it writes: a real measurement through the protocol."""
from pathlib import Path

TITLE = "small vs big"


def ratios(work: Path, runs: int) -> list[dict]:
    work.mkdir(parents=True)
    (work / "big.bin").write_bytes(b"x" * 4000)
    (work / "small.bin").write_bytes(b"x" * 1000)
    return [{"case": "files", "metric": "bytes", "baseline": "big", "candidate": "small",
             "baseline_value": (work / "big.bin").stat().st_size,
             "candidate_value": (work / "small.bin").stat().st_size, "better": "lower", "note": f"runs={runs}"}]
'''

MISSING_MODULE = '''
from edgec.core.errors import require


def ratios(work, runs):
    require("surely_not_installed_runtime", "quantumchip", "the quantumchip comparison")
'''


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    root = tmp_path / "fakebench"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "small_vs_big.py").write_text(SIZES_MODULE)
    (root / "chip_vs_default.py").write_text(MISSING_MODULE)
    (root / "old_vs_new.py").write_text("def main():\n    return 0\n")
    (root / "pkg_vs_none.py").write_text("def ratios(work, runs):\n    import surely_not_installed_pkg\n")
    (root / "bug_vs_fix.py").write_text("def ratios(work, runs):\n    return [{'case': 'c'}]\n")
    (root / "helpers.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fakebench"


def test_discovers_only_vs_modules(package: str) -> None:
    assert compare.discover(package) == ["bug_vs_fix", "chip_vs_default", "old_vs_new", "pkg_vs_none", "small_vs_big"]


def test_runs_each_module_and_prints_one_table_of_ratios(package: str, tmp_path: Path) -> None:
    outcomes = [compare.run_module(name, tmp_path / "work", 7, package) for name in compare.discover(package)]
    by_name = {o.name: o for o in outcomes}
    (row,) = by_name["small_vs_big"].rows
    assert row["ratio"] == pytest.approx(0.25) and row["gain"] == pytest.approx(4.0)
    assert by_name["chip_vs_default"].skipped and "pip install 'edgec[quantumchip]'" in by_name["chip_vs_default"].skipped
    assert by_name["old_vs_new"].skipped == "does not define ratios(work, runs) (see edgec.benchmarks.compare)"
    assert by_name["pkg_vs_none"].skipped == "needs the package surely_not_installed_pkg (not installed)"
    assert by_name["bug_vs_fix"].failed and "does not follow the protocol" in by_name["bug_vs_fix"].failed
    table = compare.format_table(outcomes)
    assert "small vs big" in table and "big 4000" in table and "small 1000" in table and "4.00" in table
    assert "skipped chip_vs_default:" in table and "small vs big, files: runs=7" in table
    assert "FAILED bug_vs_fix: ValueError" in table


def test_rows_must_follow_the_protocol() -> None:
    with pytest.raises(ValueError, match="better must be lower or higher"):
        compare.with_ratio({"case": "c", "metric": "m", "baseline": "a", "candidate": "b",
                            "baseline_value": 1, "candidate_value": 2, "better": "bigger"})
    higher = compare.with_ratio({"case": "c", "metric": "top-1", "baseline": "a", "candidate": "b",
                                 "baseline_value": 0.5, "candidate_value": 0.75, "better": "higher"})
    assert higher["gain"] == pytest.approx(1.5) == higher["ratio"]


def test_entry_point_rejects_unknown_comparisons(capsys: pytest.CaptureFixture[str]) -> None:
    assert compare.main(["--only", "nope_vs_none"]) == 2
    assert "unknown comparisons ['nope_vs_none']" in capsys.readouterr().err
