"""Shared output of the benchmarks that register here (``files``, ``breakeven``, ``latency``, ``merge_copy``): run
one, write its JSON with the configuration and machine facts to ``bench/results/<name>-<UTC stamp>.json`` and
``<name>-latest.json``, print its ratio table, write ``<name>-latest.md`` (the ratio table and a Mermaid
chart for the README, :mod:`bench.markdown`) and draw its PNG chart when matplotlib is installed (a dev
dependency). ``cdc_sink`` writes its own JSON and then the same .md and .png (:func:`write_outputs`);
:func:`regenerate` (``python -m bench report``) writes them again from the latest JSONs. The timing
helpers they share: :class:`Stopwatch` (wall-clock seconds of a block) and :func:`timings` (the median and
the spread, min..max, of repeated runs).

``python -m bench [--quick] [--only files,breakeven,latency]``: ``--quick`` uses small sizes (a smoke check well
under 5 minutes); the knobs each module documents (``BENCH_*``) override both sizes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


class Stopwatch:
    """Wall-clock seconds (``time.perf_counter``) since it was made: ``clock = Stopwatch()``, then
    ``clock.s``."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    @property
    def s(self) -> float:
        return time.perf_counter() - self._t0


def timings(runs: Sequence[float], digits: int = 3, with_runs: bool = True) -> dict[str, Any]:
    """Repeated timings (seconds) as reported: ``median_s`` and the spread ``min_s``..``max_s``, rounded
    to ``digits``; every run as ``runs_s`` unless ``with_runs`` is false."""
    out: dict[str, Any] = {"runs_s": [round(x, digits) for x in runs]} if with_runs else {}
    out.update(
        median_s=round(statistics.median(runs), digits),
        min_s=round(min(runs), digits),
        max_s=round(max(runs), digits),
    )
    return out


def run_then_clean_up(bench: Any) -> dict[str, Any]:
    """``bench.main()``, and ``bench.cleanup()`` whatever happens (each bench's ``main``)."""
    try:
        return dict(bench.main())
    finally:
        bench.cleanup()


def parse_args(argv: list[str]) -> tuple[set[str], bool, list[str]]:
    """``(only, quick, the other options)``; bare names (``python -m bench files``) still select
    benchmarks; options this parser does not know (``--events``...) go to the CDC sink bench."""
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    ap.add_argument("--only", default="", help="comma list: cdc_sink, files, breakeven, latency, merge_copy")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke check in under 5 minutes")
    a, rest = ap.parse_known_args(argv)
    only = {n for n in a.only.split(",") if n} | set(a.names)
    return only, a.quick, rest


def machine() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0]
        facts["mem_total"] = mem.split(":", 1)[1].strip()
        facts["cpu_model"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration, IndexError):
        pass
    try:
        facts["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=RESULTS.parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return facts


def run(name: str, quick: bool) -> bool:
    """Run ``bench.<name>.main(quick)``; True when its outputs were checked equal."""
    from cdclab.lab.config import LabConfig

    os.environ.update(LabConfig.load().airflow_env())  # connections for the library, as in a task
    module = importlib.import_module(f"bench.{name}")
    facts = machine()
    started = time.time()
    result = module.main(quick=quick)
    doc = {
        **result,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "quick": quick,
        "config": {
            **result.get("settings", {}),
            "env": {k: v for k, v in os.environ.items() if k.startswith("BENCH_")},
        },
        "machine": {**facts, "loadavg_at_end": os.getloadavg()},
    }
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    RESULTS.mkdir(exist_ok=True)
    for fname in (f"{name}-{stamp}.json", f"{name}-latest.json"):
        (RESULTS / fname).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(module.table(doc), flush=True)
    write_outputs(name, doc, stamp)
    return bool(result["outputs_equal"])


def grouped_bars(
    path: Any,
    groups: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float], Sequence[Sequence[float]] | None]],
    *,
    width: float,
    ylabel: str,
    title: str,
) -> None:
    """A PNG of bars side by side per group (the x ticks), one bar of each series per group, centred on the
    tick; ``series``: (label, colour, one height per group, error bars as [below, above] or None)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for k, (label, color, heights, err) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, heights, width, yerr=err, capsize=3, label=label, color=color)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(
    name: str, doc: dict[str, Any], stamp: str | None = None, results: Path = RESULTS
) -> list[Path]:
    """``<name>-latest.md`` (the ratio table and a Mermaid chart, :mod:`bench.markdown`) and the PNG
    chart of ``bench.<name>`` (``<name>-latest.png``, and ``<name>-<stamp>.png`` when given) when
    matplotlib is installed; returns the files written."""
    from bench import markdown

    results.mkdir(exist_ok=True)
    written = [results / f"{name}-latest.md"]
    written[0].write_text(markdown.render(name, doc))
    print(f"[bench {name}] markdown: {written[0]}", flush=True)
    chart = getattr(importlib.import_module(f"bench.{name}"), "chart", None)
    if chart is None:
        return written
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        print(f"[bench {name}] matplotlib is not installed: no chart (uv sync --extra dev)", flush=True)
        return written
    for fname in ([f"{name}-{stamp}.png"] if stamp else []) + [f"{name}-latest.png"]:
        chart(doc, results / fname)
        written.append(results / fname)
    print(f"[bench {name}] chart: {results / f'{name}-latest.png'}", flush=True)
    return written


def regenerate(results: Path = RESULTS) -> int:
    """``python -m bench report``: the .md and .png of every ``<name>-latest.json`` in ``results``
    again, running no benchmark. 1 when there is none."""
    found = sorted(results.glob("*-latest.json"))
    if not found:
        print(f"no <name>-latest.json in {results}: run a benchmark first (python -m bench ...)", flush=True)
        return 1
    for path in found:
        name = path.name.removesuffix("-latest.json")
        write_outputs(name, json.loads(path.read_text()), results=results)
    return 0
