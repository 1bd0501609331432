"""`tooloo bench`: benchmark suites and their report.

    run_benchmarks(["modules"], as_json=False)   # prints a table, returns the exit code

Figures are measurements for the closing notes and baselines, never assertions: speed
goals belong here, not in timed unit tests.
"""

from __future__ import annotations

import json
import platform
import sys


def run_benchmarks(suites: list[str], *, as_json: bool = False, quick: bool = False) -> int:
    from tooloo_cli.bench.modules import run_module_benchmarks

    runs = 2 if quick else 5
    results = []
    if "modules" in suites:
        results.extend(run_module_benchmarks(runs=runs, scale=0.05 if quick else 1.0))
    if as_json:
        document = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "quick": quick,
            "results": [result.to_dict() for result in results],
        }
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        from tooloo_cli.bench.report import print_module_table

        print_module_table(results, runs=runs, quick=quick)
    return 0
