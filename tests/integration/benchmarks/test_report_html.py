"""The HTML report renders its plots in a real browser (headless Chromium), offline and without scripts."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgec.benchmarks import bench, report
from tests.support.shim import labelled_eval

pytestmark = pytest.mark.slow

PROBE = """<script>
const out = [];
for (const svg of document.querySelectorAll('svg.plot')) {
  const box = svg.getBoundingClientRect();
  const inside = r => r.width > 0 && r.height > 0 && r.left >= box.left - 1 && r.right <= box.right + 1
                      && r.top >= box.top - 1 && r.bottom <= box.bottom + 1;
  const marks = [...svg.querySelectorAll('.mark')].map(m => m.getBoundingClientRect()).filter(inside);
  out.push({id: svg.id, width: box.width, height: box.height, marks: marks.length});
}
const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script></body>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("headless Chromium is not installed (Debian: apt-get install -y --no-install-recommends chromium)")


def run_chromium(*args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--window-size=1200,1800"]
    return subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def page(siblings: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("html")
    data = labelled_eval(folder / "eval.npz", siblings["onnx"])
    options = bench.BenchOptions(runs=20, warmup=2, eval_data=data)
    results = bench.bench_all([siblings["fp32"], siblings["int8"]], options)
    checks, _ = bench.speedup_checks(results, 1.0)
    path = folder / "bench.html"
    path.write_text(report.to_html(report.make_report(results, [c.to_json() for c in checks])))
    return path


def test_every_plot_lays_out_one_mark_per_bundle_inside_its_frame(page: Path, tmp_path: Path) -> None:
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE))
    proc = run_chromium("--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stderr[-2000:]
    plots = {p["id"]: p for p in json.loads(html.unescape(found.group(1)))}
    assert set(plots) == {"plot-latency-size", "plot-quality-latency", "plot-latency-bars", "plot-memory-bars"}
    for plot in plots.values():
        assert plot["width"] > 300 and plot["height"] > 200, plot
        assert plot["marks"] == 2, plot


def test_screenshot_shows_the_plots_in_the_target_color(page: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "shot.png"
    proc = run_chromium(f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    onnx_blue = np.array([0x1F, 0x77, 0xB4])
    blue = np.abs(pixels - onnx_blue).sum(axis=1) <= 12
    non_white = (pixels < 240).any(axis=1)
    assert non_white.mean() > 0.05  # text, table, frames
    assert blue.sum() > 20_000  # bars and markers painted (four plots, two bundles each)
