"""`tooloo bench`: benchmark suites and their report.

    run_benchmarks(["modules"], as_json=False)   # prints a table, returns the exit code
    run_benchmarks(["http"], strict=True)         # 1 when a figure misses its target

Figures are measurements for the closing notes and baselines, never assertions: speed
goals belong here, not in timed unit tests.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any


def run_benchmarks(suites: list[str], *, as_json: bool = False, quick: bool = False, summary_only: bool = False,
                   save: Path | None = None, compare_with: Path | None = None, threshold: float = 15.0,
                   strict: bool = False) -> int:
    """Runs the suites and prints one report; the exit code is 1 on a regression past `threshold` %
    against a baseline, and (`strict`) when a figure misses its target, 0 otherwise."""
    from rich.console import Console

    from tooloo_cli.bench import baseline, report

    previous = baseline.load(compare_with) if compare_with is not None else None  # fail early, before measuring
    console = Console(stderr=as_json)  # progress goes to stderr when stdout carries JSON
    runs = 2 if quick else 5
    details = not as_json and not summary_only
    document: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(), "quick": quick}
    if "modules" in suites:
        from tooloo_cli.bench.modules import run_module_benchmarks

        with console.status("bench modules: resilience micro-benchmarks"):
            modules = run_module_benchmarks(runs=runs, scale=0.05 if quick else 1.0)
        document["modules"] = [result.to_dict() for result in modules]
        if details:
            report.print_module_table(modules, runs=runs, quick=quick, console=console)
    if "http" in suites:
        from tooloo_cli.bench.http import run_http_benchmarks

        with console.status("bench http") as status:
            http = run_http_benchmarks(seconds=0.3 if quick else 2.0, rounds=1 if quick else 3,
                                       progress=lambda step: status.update(f"bench http: {step}"))
        document["http"] = http.to_dict()
        if details:
            report.print_http_table(http, quick=quick, console=console)
    if "startup" in suites:
        from tooloo_cli.bench.startup import run_startup_benchmarks

        with console.status("bench startup: tooloo up, status and down, for real"):
            startup = run_startup_benchmarks(rounds=1 if quick else 3)
        document["startup"] = startup.to_dict()
        if details:
            report.print_startup_table(startup, quick=quick, console=console)
    if save is not None:
        save.write_text(json.dumps(document, indent=2) + "\n")
        console.print(f"saved {save}")
    if as_json:
        json.dump(document, sys.stdout, indent=2)
        print()
    elif summary_only:
        report.print_summary(baseline.figures(document), console=console)
    failed = False
    if strict:
        missed = baseline.missed_targets(document)
        for figure in missed:
            console.print(f"[red]missed[/] {figure.name}: {figure.value:,.3g} {figure.unit}, target "
                          f"{'≤' if figure.lower_is_better else '≥'} {figure.target:g} {figure.unit}")
        failed = bool(missed)
    if previous is not None:
        changes = baseline.compare(previous, document)
        report.print_comparison(changes, threshold, compare_with, console=console)
        failed = failed or any(change.regressed(threshold) for change in changes)
    return 1 if failed else 0
