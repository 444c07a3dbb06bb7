"""Markdown for the README from a benchmark's JSON: the date and machine facts, the ratio table, and a
Mermaid ``xychart-beta`` chart (text that GitHub renders), written to ``bench/results/<name>-latest.md``.

Pure functions of the JSON (no database, no clock): :func:`render` picks the benchmark's layout.
- ``cdc_sink``: events/s bars per sink and batch size;
- ``latency``: the latency CDF as lines of percentiles (ms), ours and the JDBC sink;
- ``breakeven``: incremental ÷ full reload time against the changed fraction (a line per incremental,
  and the full reload's 1.0);
- ``files``: MB/s bars of every load of the same file;
- ``merge_copy``: rows/s bars of the merge and of COPY per case and batch size.

``xychart-beta`` draws no legend: every chart names its series, in order and with their colours, in a
line under it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

PALETTE = ["#2a7f62", "#c0632b", "#888888", "#4a78c2"]
COLOUR_NAMES = ["green", "orange", "grey", "blue"]


def _num(x: float) -> str:
    """A number for a Mermaid data list: integers without a fraction, others to 4 significant digits."""
    if isinstance(x, int) or float(x).is_integer() or abs(x) >= 100:
        return str(round(x))
    text = f"{x:.4g}"
    return f"{x:.6f}".rstrip("0").rstrip(".") if "e" in text else text


def _label(s: str) -> str:
    return '"' + str(s).replace('"', "'") + '"'


def nice_max(values: Sequence[float]) -> float:
    """A round upper end for an axis holding ``values`` (1, 2 or 5 times a power of ten, >= the largest)."""
    top = max([v for v in values if v is not None] or [1.0])
    if top <= 0:
        return 1.0
    scale = 10 ** math.floor(math.log10(top))
    for m in (1, 2, 2.5, 5, 10):
        if m * scale >= top:
            return float(m * scale)
    return float(10 * scale)  # pragma: no cover


def xychart(
    title: str,
    x_labels: Sequence[str],
    y_label: str,
    series: Sequence[tuple[str, str, Sequence[float]]],
    y_max: float | None = None,
) -> str:
    """A fenced Mermaid ``xychart-beta`` block: ``series`` are ``(kind, name, values)`` with kind ``bar``
    or ``line``, one value per x label; a line under the block names the series and their colours."""
    for kind, name, values in series:
        if kind not in ("bar", "line"):
            raise ValueError(f"series kind must be bar or line, got {kind!r}")
        if len(values) != len(x_labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(x_labels)} x labels")
    top = y_max if y_max is not None else nice_max([v for _k, _n, vs in series for v in vs])
    palette = ", ".join(PALETTE[i % len(PALETTE)] for i in range(len(series)))
    lines = [
        "```mermaid",
        '%%{init: {"themeVariables": {"xyChart": {"plotColorPalette": "' + palette + '"}}}}%%',
        "xychart-beta",
        f"    title {_label(title)}",
        f"    x-axis [{', '.join(_label(x) for x in x_labels)}]",
        f"    y-axis {_label(y_label)} 0 --> {_num(top)}",
    ]
    lines += [f"    {kind} [{', '.join(_num(v) for v in values)}]" for kind, _name, values in series]
    lines.append("```")
    names = "; ".join(
        f"{name} ({kind}, {COLOUR_NAMES[i % len(COLOUR_NAMES)]})" for i, (kind, name, _v) in enumerate(series)
    )
    lines.append(f"*Series: {names}.*")
    return "\n".join(lines)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; ``None`` cells print as ``-``."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join("-" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def facts(doc: dict[str, Any]) -> str:
    """One line: when, on what machine, under what load, at which commit (from the JSON)."""
    m = doc.get("machine") or {}
    mem = m.get("mem_total")  # "24684084 kB" (/proc/meminfo) or mem_total_kb
    kb = m.get("mem_total_kb") or (
        int(mem.split()[0]) if isinstance(mem, str) and mem.endswith(" kB") else None
    )
    if kb:
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    parts = [
        f"measured {doc.get('measured_at', '?')}",
        f"{m.get('cores', '?')} cores" + (f" ({m['cpu_model']})" if m.get("cpu_model") else ""),
    ]
    if mem:
        parts.append(f"memory {mem}")
    for key, label in (("loadavg_at_start", "load at start"), ("loadavg_at_end", "at end")):
        if m.get(key):
            parts.append(f"{label} {' / '.join(f'{x:.1f}' for x in m[key])}")
    if m.get("postgres"):
        parts.append(f"PostgreSQL {m['postgres']}")
    if m.get("git_commit"):
        parts.append(f"commit {str(m['git_commit'])[:9]}")
    if doc.get("quick"):
        parts.append("**quick (smoke) sizes**")
    return "; ".join(parts)


def _f(x: float | None, digits: int = 0) -> str | None:
    return None if x is None else f"{x:,.{digits}f}"


# ----------------------------------------------------------------------------- per benchmark


def cdc_sink(doc: dict[str, Any]) -> str:
    summary = doc.get("summary") or {}
    rows, labels, values = [], [], []
    for batch, row in summary.items():

        def med(sink: str, what: str, scale: float = 1.0, row: dict[str, Any] = row) -> float | None:
            s = row[sink][what]
            return None if not s else s["median"] * scale

        def spread(sink: str, row: dict[str, Any] = row) -> str | None:
            s = row[sink]["events_per_s"]
            return None if not s else f"{s['spread_pct']:.0f} %"

        rows.append(
            [
                batch,
                _f(med("ours", "events_per_s")),
                spread("ours"),
                _f(med("jdbc", "events_per_s")),
                spread("jdbc"),
                row.get("ratio_events_per_s_ours_over_jdbc"),
                _f(med("ours", "cpu_s_per_event", 1e6), 1),
                _f(med("jdbc", "cpu_s_per_event", 1e6), 1),
                row.get("ratio_cpu_per_event_ours_over_jdbc"),
                row.get("ratio_events_per_s_ours_over_bare"),
            ]
        )
        for sink, name in (("ours", "ours"), ("jdbc", "JDBC"), ("bare", "bare")):
            labels.append(f"{name} {batch}")
            values.append(med(sink, "events_per_s") or 0.0)
    events = doc.get("events") or {}
    out = [
        f"{events.get('changes', '?'):,} change events" if isinstance(events.get("changes"), int) else "",
        table(
            [
                "batch",
                "ours ev/s",
                "spread",
                "JDBC ev/s",
                "spread",
                "ours ÷ JDBC",
                "ours µs CPU/ev",
                "JDBC µs CPU/ev",
                "CPU ours ÷ JDBC",
                "ours ÷ bare",
            ],
            rows,
        ),
        f"Failed runs: {len(doc.get('failures') or [])}.",
    ]
    if labels:
        out.append(
            xychart(
                "events/s by sink and batch size (median)", labels, "events/s", [("bar", "events/s", values)]
            )
        )
    return "\n\n".join(x for x in out if x)


LATENCY_POINTS = (
    ("p10", 10),
    ("p25", 25),
    ("p50", 50),
    ("p75", 75),
    ("p90", 90),
    ("p95", 95),
    ("p99", 99),
    ("max", 100),
)


def cdf_points(seconds: Sequence[float]) -> list[float]:
    """The latencies at :data:`LATENCY_POINTS`, in ms (one decimal)."""
    from bench.latency import percentile

    ms = [s * 1000 for s in seconds]
    return [round(percentile(ms, q), 1) for _label, q in LATENCY_POINTS]


def latency(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    sides = [("ours (follow run)", doc["latency_visible_upper_bound"], doc["latency_txn_start_lower_bound"])]
    if "jdbc" in doc:
        j = doc["jdbc"]
        sides.append(
            ("Debezium JDBC sink", j["latency_visible_upper_bound"], j["latency_txn_start_lower_bound"])
        )
    rows = []
    for name, upper, lower in sides:
        for bound, m in (("visible (upper bound)", upper), ("txn start (lower bound)", lower)):
            if m.get("n"):
                rows.append([name, bound, m["n"], m["p50_ms"], m["p90_ms"], m["p99_ms"], m["max_ms"]])
    if "ratios" in doc:
        r = doc["ratios"]["visible_upper_bound"]
        rows.append(
            [
                "**ours ÷ JDBC**",
                "visible",
                None,
                r.get("p50_ours_over_jdbc"),
                r.get("p90_ours_over_jdbc"),
                r.get("p99_ours_over_jdbc"),
                r.get("max_ours_over_jdbc"),
            ]
        )
    out = [
        f"{s['events']:,} events at {s['rate_per_s']:g}/s (achieved {doc['writer']['achieved_rate']}/s), one row per "
        f"transaction; source commit (Debezium `source.ts_ms`) → visible in the warehouse (an observer polling every "
        f"{s['observer_poll_s']} s); batch {s['follower_batch_size']}. Checks: "
        + ", ".join(f"{k} {'✓' if v else '✗'}" for k, v in doc["checks"].items())
        + ".",
        table(["sink", "bound", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows),
        f"Goal: p99 ≤ {doc['goal_p99_ms']} ms.",
    ]
    series: list[tuple[str, str, Sequence[float]]] = []
    if doc.get("latencies_s"):
        series.append(("line", "ours (follow run)", cdf_points(doc["latencies_s"])))
    if doc.get("latencies_jdbc_s"):
        series.append(("line", "Debezium JDBC sink", cdf_points(doc["latencies_jdbc_s"])))
    if series:
        out.append(
            xychart(
                "latency CDF: ms from source commit to visible, by percentile",
                [label for label, _q in LATENCY_POINTS],
                "ms",
                series,
            )
        )
    return "\n\n".join(out)


def breakeven(doc: dict[str, Any]) -> str:
    pts = doc["points"]
    rows = [
        [
            f"{p['fraction']:.1%}",
            f"{p['changed_rows']:,}",
            f"{p['full']['median_s']:.3f}",
            f"{p['incremental']['median_s']:.3f}",
            p["ratio_incremental_over_full"],
            f"{p['incremental_copy']['median_s']:.3f}",
            p["ratio_incremental_copy_over_full"],
        ]
        for p in pts
    ]
    labels = [f"{p['fraction'] * 100:g}%" for p in pts]
    ratios = {
        "incremental (library upsert) ÷ full": [p["ratio_incremental_over_full"] for p in pts],
        "incremental (COPY + set upsert) ÷ full": [p["ratio_incremental_copy_over_full"] for p in pts],
    }
    # the region that matters is around 1.0 (the break-even): the axis ends at 2 at most, and a higher
    # ratio is drawn at 2 and named under the chart (its value is in the table)
    clipped = [
        f"{name} at {label}: {v}"
        for name, vs in ratios.items()
        for label, v in zip(labels, vs, strict=True)
        if v > 2
    ]
    series: list[tuple[str, str, Sequence[float]]] = [
        ("line", name, [min(v, 2.0) for v in vs]) for name, vs in ratios.items()
    ]
    series.append(("line", "full reload (1.0)", [1.0 for _ in pts]))
    top = min(nice_max([v for _k, _n, vs in series for v in vs]), 2.0)
    chart = xychart(
        "incremental ÷ full reload time by changed fraction", labels, "time ÷ full reload", series, top
    )
    if clipped:
        chart += f"\n*Drawn at 2 (off the axis): {'; '.join(clipped)}.*"
    return "\n\n".join(
        [
            f"{doc['rows']:,} rows, median of {doc['repeats']} per point. At 1 %: {doc.get('ratio_at_1pct')} "
            f"(goal ≤ 0.05); break-even fraction: {doc.get('break_even')}; targets equal the source after every "
            f"step: {doc['outputs_equal']}.",
            table(
                ["changed", "rows", "full s", "incr s", "incr ÷ full", "incr_copy s", "incr_copy ÷ full"],
                rows,
            ),
            chart,
        ]
    )


FILE_LOADS = ("raw_copy", "raw_copy_mem", "load_fast", "load_strict")


def files(doc: dict[str, Any]) -> str:
    t = doc["timings"]
    mb = doc["file_mb"]
    rows = [
        [k, f"{t[k]['median_s']:.2f}", f"{t[k]['min_s']:.2f}..{t[k]['max_s']:.2f}", doc["mb_s"][k]]
        for k in FILE_LOADS
    ]
    c = doc["chunked"]
    labels = list(FILE_LOADS) + [f"chunked ({c['workers']} workers)"]
    values = [mb / t[k]["median_s"] for k in FILE_LOADS] + [mb / c["chunked_s"]]
    for io_ in doc.get("io_bound") or []:
        labels += [f"{io_['mb_s_per_get']:g} MB/s GET: single", f"{io_['mb_s_per_get']:g} MB/s GET: chunked"]
        values += [mb / io_["single_pass_s"], mb / io_["chunked_s"]]
    ratios = [
        ["ours (fast) ÷ raw COPY from MinIO", doc["ratio_fast_over_raw_copy"]],
        ["ours (fast) ÷ raw COPY from memory", doc["ratio_fast_over_raw_copy_mem"]],
        ["strict ÷ raw COPY from MinIO", doc["ratio_strict_over_raw_copy"]],
        [f"chunked ÷ single pass ({c['workers']} workers)", c["ratio_chunked_over_single"]],
        *(
            [
                f"chunked ÷ single pass, {io_['mb_s_per_get']:g} MB/s per GET, {io_['workers']} workers",
                io_["ratio_chunked_over_single"],
            ]
            for io_ in doc.get("io_bound") or []
        ),
    ]
    return "\n\n".join(
        [
            f"{mb} MB CSV, {doc['rows']:,} rows, median of {doc['repeats']} (min..max); outputs equal: {doc['outputs_equal']}.",
            table(["load", "median s", "min..max s", "MB/s"], rows),
            table(["ratio (higher is better for ours)", "value"], ratios),
            xychart(
                "file load throughput, MB/s (median)",
                labels,
                "MB/s",
                [("bar", "MB/s", [round(v, 1) for v in values])],
            ),
        ]
    )


def merge_copy(doc: dict[str, Any]) -> str:
    rows, labels, values = [], [], []
    for size, row in doc["batches"].items():
        for case in ("insert", "update"):
            c = row[case]
            rows.append(
                [
                    case,
                    size,
                    _f(c["merge_rows_per_s"]),
                    _f(c["copy_rows_per_s"]),
                    c["ratio_merge_over_copy"],
                    f"{c['ratio_min']}..{c['ratio_max']}",
                ]
            )
            labels += [f"{case} merge {size}", f"{case} COPY {size}"]
            values += [c["merge_rows_per_s"], c["copy_rows_per_s"]]
    return "\n\n".join(
        [
            f"{doc['rows']:,} rows per run, median of {doc['settings']['repeats']} interleaved repeats; the same "
            f"table and indexes; outputs equal: {doc['outputs_equal']}. Goal: merge ÷ COPY ≥ {doc.get('goal_ratio', 0.5)}.",
            table(["case", "batch", "merge rows/s", "COPY rows/s", "merge ÷ COPY", "min..max"], rows),
            xychart("merge vs COPY, rows/s (median)", labels, "rows/s", [("bar", "rows/s", values)]),
        ]
    )


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "cdc_sink": cdc_sink,
    "latency": latency,
    "breakeven": breakeven,
    "files": files,
    "merge_copy": merge_copy,
}


def render(name: str, doc: dict[str, Any]) -> str:
    """The Markdown of benchmark ``name`` from its JSON ``doc``."""
    if name not in RENDERERS:
        raise ValueError(f"no Markdown layout for benchmark {name!r}; known: {sorted(RENDERERS)}")
    return f"### `{name}`\n\n{facts(doc)}\n\n{RENDERERS[name](doc)}\n"
