"""Bench results as JSON, Markdown and a self-contained HTML report with inline SVG plots.

JSON schema, version 1 (all keys sorted, floats rounded to six significant digits).

One **result** (what ``python -m edgec_shim bench BUNDLE`` prints, per bundle and device)::

    schema_version     1
    kind               "edgec.bench.result"
    bundle             name, target, precision, path (absolute, on the measuring device), model_file,
                       model_bytes (every model file the manifest lists: openvino xml + bin, an
                       mlpackage's members; not golden data, layers.json or the shim), bundle_bytes
                       (every file in the manifest), manifest_sha256
    device             label (--device, default host name), system, release, machine, python, numpy,
                       cpu_count, runtime (e.g. "onnxruntime"), runtime_version (null when unknown)
    config             runs, warmup, repeats, threads (null: runtime default), batch
    load_s             seconds to load the model (runner activation)
    first_infer_ms     the first inference after loading (cold)
    latency_ms         p50, p90, p99, mean, min, max, std over all timed runs, milliseconds per batch
    throughput_per_s   samples per second: batch * runs / total timed seconds
    noise              rounds, round_p50_ms (median of each round), spread_rel ((max - min) / median
                       of the round medians), cv (std / mean of all runs)
    memory             baseline_peak_rss_bytes (before loading), peak_rss_bytes (after the timed
                       runs, before --eval); null where the OS does not say
    parity             measured (false with --no-parity), samples, outputs {NAME: max_abs, mean_abs,
                       cosine, and for class scores only: top1_agreement, top1_agree of top1_rows
                       golden rows and near_ties: the rows whose FP32 top-two margin is at most
                       2 * max_abs, the only ones where the top class can differ (edgec bench adds
                       the counts from the golden file for bundles whose older shim lacks them)},
                       tolerance {NAME: max_abs, min_cosine},
                       tolerance_source ("manifest", or "default" when the bundle records none), ok,
                       failures (one string per violation)
    eval               null, or data (file name), samples, output, metric ("top1_accuracy"), value

A **report** (what ``edgec bench`` writes; ``--merge`` reads results and reports alike)::

    schema_version     1
    kind               "edgec.bench.report"
    results            list of results, sorted by (device label, target, name, precision)
    speedup            null, or a list of {device, quantized, fp32, quantized_p50_ms, fp32_p50_ms,
                       speedup, required, ok} from --require-speedup
    not_run            bundles that could not run where they were benchmarked (e.g. Core ML off
                       macOS, a runtime not installed): {bundle (as in a result), device (label,
                       system, release, machine, python), reason, exit_code (3)}, sorted like results

Fields are only ever added within a schema version; readers must ignore unknown keys.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from edgec.core.errors import ConfigError, brief

SCHEMA_VERSION = 1
RESULT_KIND = "edgec.bench.result"
REPORT_KIND = "edgec.bench.report"
EXTRA_COLORS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
MARKERS = {"fp32": "circle", "fp16": "square", "int8": "diamond"}


def make_report(results: list[dict[str, Any]], speedup: list[dict[str, Any]] | None = None,
                not_run: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A report document from results and *not run* entries (each sorted for stable output)."""
    return {"schema_version": SCHEMA_VERSION, "kind": REPORT_KIND, "results": sorted(results, key=_sort_key),
            "speedup": speedup, "not_run": sorted(not_run or [], key=_sort_key)}


def dumps(document: dict[str, Any]) -> str:
    """Canonical JSON text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(document, sort_keys=True, indent=2) + "\n"


def load_results(paths: list[Path]) -> list[dict[str, Any]]:
    """Results from result or report files (``--merge``).

    Raises:
        ConfigError: a file is missing, not JSON, of an unknown kind or a newer schema version.
    """
    return load_merged(paths)[0]


def load_merged(paths: list[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Results, and the reports' *not run* entries, from result or report files (``--merge``).

    Raises:
        ConfigError: a file is missing, not JSON, of an unknown kind or a newer schema version.
    """
    results: list[dict[str, Any]] = []
    not_run: list[dict[str, Any]] = []
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--merge {path}: not a readable JSON file ({brief(exc, 120)})") from None
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind not in (RESULT_KIND, REPORT_KIND):
            raise ConfigError(f"--merge {path}: not an edgec bench result or report (kind {kind!r})")
        if int(data.get("schema_version", 0)) > SCHEMA_VERSION:
            raise ConfigError(f"--merge {path}: schema_version {data['schema_version']} is newer than this edgec "
                              f"reads ({SCHEMA_VERSION})", hint="upgrade edgec on this host")
        results.extend([data] if kind == RESULT_KIND else data.get("results", []))
        if kind == REPORT_KIND:
            not_run.extend(_checked_not_run(path, data.get("not_run") or []))
    return results, not_run


def _checked_not_run(path: Path, entries: Any) -> list[dict[str, Any]]:
    """A merged report's *not run* entries, each with the fields its table row shows."""
    def ok(e: Any) -> bool:
        return (isinstance(e, dict) and isinstance(e.get("bundle"), dict) and isinstance(e.get("device"), dict)
                and {"name", "target", "precision", "model_bytes"} <= set(e["bundle"]) and "label" in e["device"]
                and isinstance(e.get("reason"), str) and isinstance(e["bundle"]["model_bytes"], int))

    if not isinstance(entries, list) or not all(ok(e) for e in entries):
        raise ConfigError(f"--merge {path}: malformed not_run list (expected entries with bundle name, target, "
                          "precision, model_bytes, device label and reason)")
    return entries


def _sort_key(r: dict[str, Any]) -> tuple[str, str, str, str]:
    b = r["bundle"]
    return (str(r["device"]["label"]), str(b["target"]), str(b["name"]), str(b["precision"]))


# ----------------------------------------------------------------------------------------------- values

def min_cosine(r: dict[str, Any]) -> float | None:
    """The worst output cosine to the golden outputs, or None when parity was not measured."""
    outputs = (r.get("parity") or {}).get("outputs") or {}
    return min((float(m["cosine"]) for m in outputs.values()), default=None)


def accuracy(r: dict[str, Any]) -> float | None:
    """The ``--eval`` metric value, or None."""
    ev = r.get("eval")
    return float(ev["value"]) if ev else None


def top1_counts(r: dict[str, Any]) -> tuple[int, int, int | None] | None:
    """(agree, rows, near_ties or None) of the class-score output that agrees least with FP32 on the golden
    inputs; None when no output is class scores. Results measured elsewhere without counts give them from
    ``top1_agreement * samples`` when that is a whole number."""
    parity = r.get("parity") or {}
    found = []
    for m in (parity.get("outputs") or {}).values():
        if "top1_agree" in m and "top1_rows" in m:
            found.append((int(m["top1_agree"]), int(m["top1_rows"]), m.get("near_ties")))
        elif "top1_agreement" in m and parity.get("samples"):
            agree = float(m["top1_agreement"]) * int(parity["samples"])
            if abs(agree - round(agree)) < 1e-3:
                found.append((round(agree), int(parity["samples"]), None))
    return min(found, key=lambda c: c[0] / c[1] if c[1] else 1.0, default=None)


def notes(document: dict[str, Any]) -> list[str]:
    """Sentences under the table: how to read top-1 counts, why some are low, what to do with bundles not run."""
    counted = [(r, c) for r in document["results"] if (c := top1_counts(r)) is not None]
    found = []
    if counted:
        found.append("parity: the worst output cosine to the FP32 golden outputs, then top-1 n/m: golden inputs "
                     "whose top class matches FP32's.")
    several = len({r["device"]["label"] for r, _ in counted}) > 1
    low = [f"{_label(r)}{' on ' + str(r['device']['label']) if several else ''}: {agree}/{total} agree"
           + (f"; {ties} of {total} are near-ties" if ties is not None else "")
           for r, (agree, total, ties) in counted if agree < total]
    if low:
        found.append(f"top-1 agreement below full: {'; '.join(low)}. A near-tie is a golden input on which FP32's "
                     "top two classes are within 2 x max_abs (the bundle's largest output error) of each other: only "
                     "there can the top class change, so a flip there is rounding, not lost accuracy. Golden inputs "
                     "check that the bundle computes what FP32 computes; they are not labelled data: --eval DATA "
                     "measures accuracy.")
    if document.get("not_run"):
        found.append("not run: these bundles' runtimes cannot execute here; benchmark them on a host that runs them "
                     "(python -m edgec_shim bench BUNDLE > result.json) and add the result with --merge.")
    return found


def _label(r: dict[str, Any]) -> str:
    b = r["bundle"]
    return f"{b['name']}-{b['target']}-{b['precision']}"


def parity_cell(r: dict[str, Any]) -> str:
    """``ok 0.999984`` / ``FAIL 0.91`` / ``-``, then ``, top-1 4/8`` for class scores."""
    cos = min_cosine(r)
    if cos is None:
        return "-"
    counts = top1_counts(r)
    top1 = f", top-1 {counts[0]}/{counts[1]}" if counts else ""
    return f"{'ok' if r['parity'].get('ok') else 'FAIL'} {cos:.6f}{top1}"


def rows(document: dict[str, Any]) -> list[dict[str, str]]:
    """Formatted table rows: one per result, then one per bundle that was not run (saying why)."""
    table = []
    for r in document["results"]:
        lat, b = r["latency_ms"], r["bundle"]
        rss = (r.get("memory") or {}).get("peak_rss_bytes")
        acc = accuracy(r)
        table.append({
            "device": str(r["device"]["label"]), "bundle": str(b["name"]), "target": str(b["target"]),
            "precision": str(b["precision"]), "runtime": f"{r['device']['runtime']} {r['device'].get('runtime_version') or ''}".strip(),
            "batch": str(r["config"]["batch"]), "model size": _bytes(b["model_bytes"]),
            "load ms": f"{1000 * r['load_s']:.1f}", "p50 ms": _ms(lat["p50"]), "p90 ms": _ms(lat["p90"]),
            "p99 ms": _ms(lat["p99"]), "mean ms": _ms(lat["mean"]),
            "spread": f"±{50 * r['noise']['spread_rel']:.1f}%", "throughput/s": f"{r['throughput_per_s']:,.0f}",
            "peak RSS": _bytes(rss) if rss else "-", "parity": parity_cell(r),
            "accuracy": f"{100 * acc:.2f}%" if acc is not None else "-",
        })
    return table + [not_run_row(entry) for entry in document.get("not_run") or []]


def not_run_row(entry: dict[str, Any]) -> dict[str, str]:
    """A table row for a bundle that was not run: its size, and the reason in the runtime column."""
    b = entry["bundle"]
    row = {"device": str(entry["device"]["label"]), "bundle": str(b["name"]), "target": str(b["target"]),
           "precision": str(b["precision"]), "runtime": f"not run: {entry['reason']}", "batch": "-",
           "model size": _bytes(b["model_bytes"])}
    return {c: row.get(c, "-") for c in COLUMNS}


COLUMNS = ("device", "bundle", "target", "precision", "runtime", "batch", "model size", "load ms", "p50 ms", "p90 ms",
           "p99 ms", "mean ms", "spread", "throughput/s", "peak RSS", "parity", "accuracy")
"""The table's columns, in order (the keys of every row)."""


def _ms(value: float) -> str:
    return f"{value:.4f}" if value < 1 else f"{value:.3f}" if value < 100 else f"{value:.1f}"


def _bytes(value: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{int(value)} B"


# ----------------------------------------------------------------------------------------------- Markdown

def to_markdown(document: dict[str, Any]) -> str:
    """A Markdown table of every result, the speedup checks and a note on how to read the noise column."""
    table = rows(document)
    if not table:
        return "No results.\n"
    columns = list(table[0])
    right = {"batch", "model size", "load ms", "p50 ms", "p90 ms", "p99 ms", "mean ms", "spread", "throughput/s",
             "peak RSS", "accuracy"}
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---:" if c in right else "---" for c in columns) + "|"]
    lines += ["| " + " | ".join(row[c].replace("|", "\\|") for c in columns) + " |" for row in table]
    lines.append("")
    lines.append("Latency is per batch; spread is half the range of the per-round medians relative to their "
                 "median: differences smaller than it are noise.")
    lines += [f"- {note}" for note in notes(document)]
    for check in document.get("speedup") or []:
        mark = "ok" if check["ok"] else "FAIL"
        lines.append(f"- speedup {mark}: {check['quantized']} {check['quantized_p50_ms']:.4g} ms vs "
                     f"{check['fp32']} {check['fp32_p50_ms']:.4g} ms on {check['device']} "
                     f"({check['speedup']:.2f}x, required > {check['required']:.2f}x)")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- HTML

def palette() -> dict[str, str]:
    """The fixed color each registered target declares (``Target.color``)."""
    from edgec.targets.base import TARGETS

    return {cls.name: cls.color for cls in TARGETS.all() if cls.color}


def color(target: str, targets: list[str]) -> str:
    """A target's own color; others get spare colors by their sorted position."""
    fixed = palette()
    if target in fixed:
        return fixed[target]
    unknown = [t for t in targets if t not in fixed]
    return EXTRA_COLORS[unknown.index(target) % len(EXTRA_COLORS)] if target in unknown else EXTRA_COLORS[0]


def to_html(document: dict[str, Any], title: str = "edgec benchmark report") -> str:
    """A self-contained page (no scripts, no network): summary table and inline SVG plots."""
    results = document["results"]
    targets = sorted({r["bundle"]["target"] for r in results})
    sections = [latency_vs_size(results, targets), quality_vs_latency(results, targets),
                bars(results, targets, "p50 latency per bundle (ms; whisker: p90)", "plot-latency-bars",
                     lambda r: r["latency_ms"]["p50"], lambda r: r["latency_ms"]["p90"]),
                bars(results, targets, "Peak resident memory per bundle (MB)", "plot-memory-bars",
                     lambda r: ((r.get("memory") or {}).get("peak_rss_bytes") or 0) / 1e6, None)]
    legend = "".join(f'<span class="key"><i style="background:{color(t, targets)}"></i>{html.escape(t)}</span>'
                     for t in targets)
    return _PAGE.format(title=html.escape(title), legend=legend, table=_html_table(document),
                        plots="\n".join(sections), notes=_html_notes(document))


def _html_table(document: dict[str, Any]) -> str:
    table = rows(document)
    if not table:
        return "<p>No results.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row.values()) + "</tr>" for row in table)
    return f'<table id="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _html_notes(document: dict[str, Any]) -> str:
    items = [f"<li class=\"{'ok' if c['ok'] else 'fail'}\">speedup {'ok' if c['ok'] else 'FAIL'}: "
             f"{html.escape(c['quantized'])} {c['quantized_p50_ms']:.4g} ms vs {html.escape(c['fp32'])} "
             f"{c['fp32_p50_ms']:.4g} ms on {html.escape(c['device'])} ({c['speedup']:.2f}x)</li>"
             for c in document.get("speedup") or []]
    items += [f"<li>{html.escape(note)}</li>" for note in notes(document)]
    return f"<ul>{''.join(items)}</ul>" if items else ""


def nice_ticks(low: float, high: float, log: bool) -> list[float]:
    """Tick values covering [low, high]: decades on a log axis, 1-2-5 steps on a linear one."""
    if log:
        return [10.0 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)]
    span = (high - low) or abs(high) or 1.0
    raw = span / 5
    step = min((m * 10 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    start = math.floor(low / step) * step
    return [start + i * step for i in range(int(math.ceil((high - start) / step)) + 1)]


W, H = 520, 340
LEFT, RIGHT, TOP, BOTTOM = 78, 30, 16, 48


class Axis:
    """Maps data values to pixels, linear or log10, with ticks."""

    def __init__(self, values: list[float], lo_px: float, hi_px: float, force_zero: bool = False) -> None:
        positive = [v for v in values if v > 0]
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        self.log = bool(positive) and len(positive) == len(values) and high / low > 20
        if self.log:
            low, high = low / 1.3, high * 1.3
        else:
            pad = (high - low) * 0.08 or abs(high) * 0.1 or 1.0
            low, high = (0.0 if force_zero and low >= 0 else low - pad), high + pad
        self.ticks = nice_ticks(low, high, self.log)
        self.low, self.high = min(low, self.ticks[0]), max(high, self.ticks[-1])
        self.lo_px, self.hi_px = lo_px, hi_px

    def __call__(self, value: float) -> float:
        f = (lambda v: math.log10(max(v, 1e-300))) if self.log else (lambda v: v)
        span = (f(self.high) - f(self.low)) or 1.0
        return self.lo_px + (f(value) - f(self.low)) / span * (self.hi_px - self.lo_px)


def tick_labels(ticks: list[float], log: bool) -> list[str]:
    """Labels with as many decimals as the tick step needs (0.99998, 0.99999, 1.00000)."""
    if log or len(ticks) < 2:
        return [f"{t:.3g}" if abs(t) < 1e4 else f"{t:.2e}" for t in ticks]
    step = abs(ticks[1] - ticks[0]) or 1.0
    decimals = max(0, math.ceil(-math.log10(step) - 1e-9))
    return [f"{t:.{decimals}f}" for t in ticks]


def _frame(plot_id: str, caption: str, x: Axis, y: Axis, x_label: str, y_label: str, marks: list[str]) -> str:
    parts = [f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" fill="#fafafa" stroke="#999"/>']
    for t, label in zip(y.ticks, tick_labels(y.ticks, y.log)):
        py = y(t)
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" stroke="#e4e4e4"/>'
                     f'<text x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{label}</text>')
    for t, label in zip(x.ticks, tick_labels(x.ticks, x.log)):
        px = x(t)
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{H - BOTTOM}" stroke="#e4e4e4"/>'
                     f'<text x="{px:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{label}</text>')
    parts.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append(f'<text transform="translate(14 {(TOP + H - BOTTOM) / 2}) rotate(-90)" text-anchor="middle">'
                 f'{html.escape(y_label)}</text>')
    return _figure(plot_id, caption, "".join(parts) + "".join(marks))


def _figure(plot_id: str, caption: str, body: str) -> str:
    return (f'<figure><figcaption>{html.escape(caption)}</figcaption><svg class="plot" id="{plot_id}" '
            f'xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">'
            f'<clipPath id="{plot_id}-clip"><rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" '
            f'height="{H - TOP - BOTTOM}"/></clipPath>{body}</svg></figure>')


def _marker(px: float, py: float, precision: str, fill: str, tip: str) -> str:
    shape = MARKERS.get(precision, "circle")
    title = f"<title>{html.escape(tip)}</title>"
    if shape == "square":
        return f'<rect class="mark" x="{px - 6:.1f}" y="{py - 6:.1f}" width="12" height="12" fill="{fill}" stroke="#222">{title}</rect>'
    if shape == "diamond":
        pts = f"{px:.1f},{py - 8:.1f} {px + 8:.1f},{py:.1f} {px:.1f},{py + 8:.1f} {px - 8:.1f},{py:.1f}"
        return f'<polygon class="mark" points="{pts}" fill="{fill}" stroke="#222">{title}</polygon>'
    return f'<circle class="mark" cx="{px:.1f}" cy="{py:.1f}" r="7" fill="{fill}" stroke="#222">{title}</circle>'


def _tip(r: dict[str, Any]) -> str:
    b = r["bundle"]
    return f"{b['name']} {b['target']} {b['precision']} on {r['device']['label']}: p50 {r['latency_ms']['p50']:.4g} ms"


def _scatter(plot_id: str, caption: str, points: list[tuple[float, float, dict[str, Any]]], targets: list[str],
             x_label: str, y_label: str) -> str:
    if not points:
        return _figure(plot_id, caption, f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text>')
    x = Axis([p[0] for p in points], LEFT, W - RIGHT)
    y = Axis([p[1] for p in points], H - BOTTOM, TOP)
    marks = [_marker(x(px), y(py), r["bundle"]["precision"], color(r["bundle"]["target"], targets), _tip(r))
             for px, py, r in points]
    return _frame(plot_id, caption, x, y, x_label, y_label, marks)


def latency_vs_size(results: list[dict[str, Any]], targets: list[str]) -> str:
    """Scatter: model size (x) against p50 latency (y), colored by target, marker by precision."""
    points = [(float(r["bundle"]["model_bytes"]) / 1e6, float(r["latency_ms"]["p50"]), r) for r in results]
    return _scatter("plot-latency-size", "Latency vs model size", points, targets, "model size (MB)", "p50 latency (ms)")


def quality_vs_latency(results: list[dict[str, Any]], targets: list[str]) -> str:
    """Scatter: p50 latency (x) against --eval accuracy, or parity cosine where no result has accuracy."""
    if any(accuracy(r) is not None for r in results):
        points = [(float(r["latency_ms"]["p50"]), 100 * acc, r) for r in results if (acc := accuracy(r)) is not None]
        return _scatter("plot-quality-latency", "Accuracy vs latency", points, targets, "p50 latency (ms)", "top-1 accuracy (%)")
    points = [(float(r["latency_ms"]["p50"]), cos, r) for r in results if (cos := min_cosine(r)) is not None]
    return _scatter("plot-quality-latency", "Parity (min cosine to FP32) vs latency", points, targets,
                    "p50 latency (ms)", "min cosine to FP32")


def bars(results: list[dict[str, Any]], targets: list[str], caption: str, plot_id: str,
         value: Any, whisker: Any) -> str:
    """One bar per result grouped by target (colored), optional whisker above each bar."""
    ordered = sorted(results, key=lambda r: (r["bundle"]["target"], r["bundle"]["name"], r["bundle"]["precision"],
                                             r["device"]["label"]))
    if not ordered:
        return _figure(plot_id, caption, f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text>')
    tops = [float(value(r)) for r in ordered] + ([float(whisker(r)) for r in ordered] if whisker else [])
    y = Axis([0.0, *tops], H - BOTTOM, TOP, force_zero=True)
    slot = (W - LEFT - RIGHT) / len(ordered)
    marks = []
    for i, r in enumerate(ordered):
        v, x0 = float(value(r)), LEFT + i * slot
        fill = color(r["bundle"]["target"], targets)
        marks.append(f'<rect class="mark" x="{x0 + slot * 0.15:.1f}" y="{y(v):.1f}" width="{slot * 0.7:.1f}" '
                     f'height="{max(y(0) - y(v), 1):.1f}" fill="{fill}"><title>{html.escape(_tip(r))}</title></rect>')
        if whisker:
            marks.append(f'<line x1="{x0 + slot / 2:.1f}" x2="{x0 + slot / 2:.1f}" y1="{y(v):.1f}" '
                         f'y2="{y(float(whisker(r))):.1f}" stroke="#222" stroke-width="2"/>')
        names = len({o["bundle"]["name"] for o in ordered}) > 1
        devices = len({o["device"]["label"] for o in ordered}) > 1
        label = html.escape(f"{r['bundle']['name']} " * names + r["bundle"]["precision"]
                            + f" @{r['device']['label']}" * devices)
        marks.append(f'<text x="{x0 + slot / 2:.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">{label}</text>')
    x = Axis([0.0, 1.0], LEFT, W - RIGHT)
    x.ticks = []
    return _frame(plot_id, caption, x, y, "bundle (grouped by target)", caption.split(" per ")[0], marks)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }}
table {{ border-collapse: collapse; font-size: 12px; margin-bottom: 24px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 6px; text-align: right; }}
th {{ background: #f3f3f3; }} td:nth-child(-n+5) {{ text-align: left; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 16px; }}
figure {{ margin: 0; }} figcaption {{ font-weight: 600; margin-bottom: 4px; }}
.key {{ margin-right: 14px; }} .key i {{ display: inline-block; width: 12px; height: 12px; margin-right: 4px; }}
.fail {{ color: #b00; }} .ok {{ color: #070; }}
svg text {{ font: 11px system-ui, sans-serif; fill: #333; }}
</style></head>
<body>
<h1>{title}</h1>
<p>Targets: {legend} &nbsp; markers: circle fp32, square fp16, diamond int8</p>
{table}
{notes}
<div class="plots">
{plots}
</div>
</body></html>
"""
