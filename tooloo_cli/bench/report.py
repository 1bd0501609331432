"""Rich tables for benchmark results.

    print_module_table(run_module_benchmarks())
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tooloo_cli.bench.baseline import Change, Figure
from tooloo_cli.bench.http import TARGETS, HttpResults
from tooloo_cli.bench.modules import BenchResult
from tooloo_cli.bench.startup import TARGETS as STARTUP_TARGETS
from tooloo_cli.bench.startup import StartupResults


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


def _verdict(ok: bool) -> str:
    return "[green]✓[/]" if ok else "[red]✗[/]"


def print_http_table(results: HttpResults, *, quick: bool = False, console: Console | None = None) -> None:
    console = console or Console()
    title = "tooloo bench http" + (" (quick: not a measurement)" if quick else "")
    table = Table(title=title, title_justify="left")
    for column, justify in (("scenario", "left"), ("req/s", "right"), ("p50 ms", "right"), ("p99 ms", "right"),
                            ("requests", "right"), ("errors", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for s in results.scenarios:
        table.add_row(s.name, f"{s.requests_per_s:,.0f}", f"{s.p50_ms:.2f}", f"{s.p99_ms:.2f}", f"{s.requests:,}",
                      f"[red]{s.errors}[/]" if s.errors else "0")
    console.print(table)
    figures = results.figures
    lines = [
        ("the gateway keeps", f"{figures['proxiedShare']:.1%} of the direct route's req/s (50 connections)",
         f"≥ {TARGETS['proxiedShare']:.0%}", figures["proxiedShare"] >= TARGETS["proxiedShare"]),
        ("its p99 is", f"{figures['proxiedP99Ratio']:.1f}× the direct route's",
         f"≤ {TARGETS['proxiedP99Ratio']:.0f}×", figures["proxiedP99Ratio"] <= TARGETS["proxiedP99Ratio"]),
        ("a traced route keeps", f"{figures['middlewareShare']:.1%} of the bare route's req/s",
         f"≥ {TARGETS['middlewareShare']:.0%}", figures["middlewareShare"] >= TARGETS["middlewareShare"]),
        ("burst cache hit takes", f"{figures['burstHitShare']:.1%} of a miss's p50 latency",
         f"≤ {TARGETS['burstHitShare']:.0%}", figures["burstHitShare"] <= TARGETS["burstHitShare"]),
        ("tracing at sampling 1.0 costs", f"{figures['samplingCost']:+.1%} req/s against 0.0",
         f"≤ {TARGETS['samplingCost']:.0%}", figures["samplingCost"] <= TARGETS["samplingCost"]),
        ("the eight services use", f"{figures['stackPssMb']:.0f} MB PSS",
         f"≤ {TARGETS['stackPssMb']:.0f} MB", figures["stackPssMb"] <= TARGETS["stackPssMb"]),
    ]
    summary = Table(show_header=True, title="figures", title_justify="left")
    for column in ("figure", "measured", "target", ""):
        summary.add_column(column)
    for name, measured, target, ok in lines:
        summary.add_row(name, measured, target, _verdict(ok))
    console.print(summary)


def print_startup_table(results: StartupResults, *, quick: bool = False, console: Console | None = None) -> None:
    console = console or Console()
    title = "tooloo bench startup: seconds after `tooloo up` began" + (" (quick)" if quick else "")
    chain = Table(title=title, title_justify="left")
    for column in ("service", "spawned", "healthy"):
        chain.add_column(column, justify="left" if column == "service" else "right")
    for name, timing in sorted(results.services.items(), key=lambda item: item[1]["healthy"]):
        chain.add_row(name, f"{timing['spawned']:.3f}", f"{timing['healthy']:.3f}")
    console.print(chain)
    figures = results.figures
    rows = [
        ("tooloo up → all healthy", f"{figures['upSeconds']:.2f} s", f"≤ {STARTUP_TARGETS['upSeconds']} s",
         figures["upSeconds"] <= STARTUP_TARGETS["upSeconds"]),
        ("tooloo down", f"{figures['downSeconds']:.2f} s", f"≤ {STARTUP_TARGETS['downSeconds']} s",
         figures["downSeconds"] <= STARTUP_TARGETS["downSeconds"]),
        ("orphans after down", f"{figures['orphans']:.0f}", "0", figures["orphans"] == 0),
        ("tooloo status", f"{figures['statusSeconds'] * 1000:.0f} ms",
         f"≤ {STARTUP_TARGETS['statusSeconds'] * 1000:.0f} ms", figures["statusSeconds"] <= STARTUP_TARGETS["statusSeconds"]),
        ("tooloo --version", f"{figures['versionSeconds'] * 1000:.0f} ms",
         f"≤ {STARTUP_TARGETS['versionSeconds'] * 1000:.0f} ms",
         figures["versionSeconds"] <= STARTUP_TARGETS["versionSeconds"]),
        ("supervisor RSS", f"{figures['supervisorRssMb']:.1f} MB", f"≤ {STARTUP_TARGETS['supervisorRssMb']:.0f} MB",
         figures["supervisorRssMb"] <= STARTUP_TARGETS["supervisorRssMb"]),
    ]
    summary = Table(title="figures", title_justify="left")
    for column in ("figure", "measured", "target", ""):
        summary.add_column(column)
    for name, measured, target, ok in rows:
        summary.add_row(name, measured, target, _verdict(ok))
    console.print(summary)


def _value(figure: Figure, value: float) -> str:
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"


def print_summary(figures: dict[str, Figure], *, console: Console | None = None) -> None:
    """One table of every figure that has a target, and whether it meets it."""
    console = console or Console()
    table = Table(title="tooloo bench: figures with a target", title_justify="left")
    for column, justify in (("figure", "left"), ("measured", "right"), ("target", "right"), ("", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for figure in figures.values():
        if figure.target is None:
            continue
        sign = "≤" if figure.lower_is_better else "≥"
        table.add_row(figure.name, f"{_value(figure, figure.value)} {figure.unit}",
                      f"{sign} {figure.target:g} {figure.unit}", _verdict(bool(figure.meets_target)))
    console.print(table)


def print_comparison(changes: list[Change], threshold: float, baseline: object, *,
                     console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"against {baseline} (regression: worse by more than {threshold:g} %)", title_justify="left")
    for column, justify in (("figure", "left"), ("baseline", "right"), ("now", "right"), ("change", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("", no_wrap=True, min_width=9)  # the verdict is the point: never squeezed away
    for change in changes:
        figure = change.figure
        if change.regressed(threshold):
            verdict = "[red]regressed[/]"
        elif change.percent < -threshold:
            verdict = "[green]improved[/]"
        else:
            verdict = "[dim]within[/]"
        table.add_row(figure.name, f"{_value(figure, change.baseline)} {figure.unit}",
                      f"{_value(figure, figure.value)} {figure.unit}", f"{-change.percent:+.1f} % better"
                      if change.percent <= 0 else f"{change.percent:.1f} % worse", verdict)
    console.print(table)
