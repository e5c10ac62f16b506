"""Markdown tables from a results file of :mod:`benchmarks.bench_ledger` (for docs/benchmarks.md).

.venv/bin/python -m benchmarks.report benchmarks/results/<timestamp>.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TARGETS = {
    "ingest_share_of_ceiling": ">= 25 % of the raw ceiling",
    "ingest_vs_eventsourcing_bulk": "> eventsourcing bulk",
    "rebuild_events_per_s": ">= 50,000 events/s",
    "verify_events_per_s": ">= 200,000 events/s",
    "peak_rss_mb": "< 250 MB, flat",
}


def rate(result: dict[str, Any], key: str = "events") -> float:
    return float(result[key]) / result["seconds"] if result["seconds"] else 0.0


def verdict(results: dict[str, Any], key: str) -> str:
    found = results.get("targets", {}).get(key)
    if found is None:
        return "-"
    return "met" if found["met"] else "**not met**"


def backend_table(report: dict[str, Any]) -> str:
    backends = list(report["backends"])
    rows: list[list[str]] = []

    def add(label: str, fn: Any, target: str = "", key: str | None = None) -> None:
        cells = []
        for backend in backends:
            results = report["backends"][backend]
            try:
                value = fn(results)
            except KeyError:
                value = "-"
            if key is not None:
                value = f"{value} ({verdict(results, key)})"
            cells.append(value)
        rows.append([label, *cells, target])

    add("ingest, snapshots/s", lambda r: f"{rate(r['ingest_full'], 'snapshots'):,.0f}")
    add("ingest, events/s", lambda r: f"{rate(r['ingest_full']):,.0f}")
    add("ingest wall time (events)", lambda r: f"{r['ingest_full']['seconds']:,.1f} s ({r['ingest_full']['events']:,})")
    add(
        "ingest client CPU / wall",
        lambda r: f"{r['ingest_full']['client_cpu_seconds'] / r['ingest_full']['seconds']:.0%}",
    )
    add("raw ceiling, events/s", lambda r: f"{rate(r['ceiling']):,.0f}")
    add(
        "ingest / raw ceiling",
        lambda r: f"{r['targets']['ingest_share_of_ceiling']['value']:.1%}",
        TARGETS["ingest_share_of_ceiling"],
        "ingest_share_of_ceiling",
    )
    add("eventsourcing bulk save, events/s", lambda r: f"{rate(r['peer_bulk']):,.0f}")
    add("eventsourcing save per run, events/s", lambda r: f"{rate(r['peer_save']):,.0f}")
    add(
        "ingest / eventsourcing bulk",
        lambda r: f"{r['targets']['ingest_vs_eventsourcing_bulk']['value']:.2f}x",
        TARGETS["ingest_vs_eventsourcing_bulk"],
        "ingest_vs_eventsourcing_bulk",
    )
    add(
        "projection rebuild, events/s",
        lambda r: f"{rate(r['rebuild_full']):,.0f}",
        TARGETS["rebuild_events_per_s"],
        "rebuild_events_per_s",
    )
    add(
        "audit verify, events/s",
        lambda r: f"{rate(r['verify_full']):,.0f}",
        TARGETS["verify_events_per_s"],
        "verify_events_per_s",
    )
    add(
        "peak RSS, worst phase",
        lambda r: f"{r['targets']['peak_rss_mb']['value']:.0f} MB",
        TARGETS["peak_rss_mb"],
        "peak_rss_mb",
    )
    return _table(["", *backends, "target"], rows)


def rss_table(report: dict[str, Any]) -> str:
    rows = []
    for backend, results in report["backends"].items():
        for phase in ("ingest", "rebuild", "verify"):
            cells = [f"{results[f'{phase}_{size}']['peak_rss_mb']:.0f}" for size in results["sizes"]]
            rows.append([backend, phase, *cells])
    sizes = next(iter(report["backends"].values()))["sizes"]
    labels = [f"{int(size):,} snapshots" if size != "full" else "full" for size in sizes]
    return _table(["backend", "phase", *labels], rows)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    report = json.loads(args.results.read_text())
    meta = report["meta"]
    print(
        f"{meta['events_requested']:,} events requested: {meta['runs']:,} runs, {meta['snapshots_full']:,} snapshots, "
        f"{next(iter(report['backends'].values()))['ingest_full']['events']:,} events. Code: "
        f"{(meta.get('code') or {}).get('head')}; changed during the run: {meta.get('code_changed_during_run')}. "
        f"Load average at start / end: {meta['machine']['loadavg_start'][0]:.2f} / {meta['loadavg_end'][0]:.2f}."
    )
    print()
    print(backend_table(report))
    print()
    print(rss_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
