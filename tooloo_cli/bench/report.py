"""Rich tables for benchmark results.

    print_module_table(run_module_benchmarks())
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tooloo_cli.bench.modules import BenchResult


def _us(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def print_module_table(results: list[BenchResult], *, runs: int, quick: bool = False,
                       console: Console | None = None) -> None:
    console = console or Console()
    title = "tooloo bench modules" + (" (quick: not a measurement)" if quick else "")
    table = Table(title=title, title_justify="left")
    table.add_column("benchmark")
    table.add_column("ops/s", justify="right")
    table.add_column("µs/op", justify="right")
    table.add_column("target µs", justify="right")
    table.add_column("seed (Node) µs", justify="right")
    table.add_column("vs seed", justify="right")
    for result in results:
        target, seed = result.target_us, result.seed_us
        if target is None:
            target_cell = ""
        elif result.us_per_op <= target:
            target_cell = f"[green]≤ {target:g} ✓[/]"
        else:
            target_cell = f"[red]≤ {target:g} ✗[/]"
        table.add_row(
            result.name,
            "" if result.ops_per_s is None else f"{result.ops_per_s:,.0f}",
            _us(result.us_per_op),
            target_cell,
            "" if seed is None else f"{seed:g}",
            "" if seed is None or result.us_per_op <= 0 else f"{seed / result.us_per_op:.1f}× faster",
        )
    console.print(table)
    console.print(f"µs/op: median of {runs} runs (cache set: median of every single write, WAL on disk).")
