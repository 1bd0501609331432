"""Rich tables for benchmark results.

    print_module_table(run_module_benchmarks())
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tooloo_cli.bench.baseline import Change, Figure
from tooloo_cli.bench.http import TARGETS, HttpResults
from tooloo_cli.bench.modules import BenchResult, shared_unavailable
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
    console.print(
        f"µs/op: the median of {runs} runs, each the mean of a timed batch (a mean, as throughput pays it).\n"
        "cache set: 2,000 PersistentCache.set calls as budget makes them (WAL file, its checkpoints and\n"
        "  expiry sweeps included). breaker: CircuitBreaker.call as the services make it (call_timeout 10 s);\n"
        "  overhead = that minus a bare await. traced request: a trace as ServiceMiddleware opens it and 8 child\n"
        "  spans of one attribute, per request. rate-limit check (crowd): one run, 100k clients (10x\n"
        "  max_clients) in turn, 4 rounds, each asking twice its refill, on a one-tick-a-request clock;\n"
        "  against 1k clients asking alike (all fit) in the figures below. shared (Redis): over a\n"
        "  redis-server of the bench's own on a Unix socket, one awaited round trip each, one after another."
        if not quick else
        f"µs/op: the median of {runs} runs, each the mean of a timed batch (quick: batches and the crowd"
        " scaled down 20x)."
    )
    if (why := shared_unavailable()) is not None:
        console.print(f"[yellow]shared (Redis) benchmarks left out: {why}[/]")
    extra = [(result, figure) for result in results for figure in result.figures]
    if not extra:
        return

    def measured(value: float) -> str:  # a count as a whole number, a ratio or a share with 3 decimals
        if value == int(value) and abs(value) >= 10:
            return f"{value:,.0f}"
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"

    figures = Table(title="figures that are not µs/op", title_justify="left")
    for column, justify in (("benchmark", "left"), ("figure", "left"), ("measured", "right"), ("target", "right"),
                            ("", "left")):
        figures.add_column(column, justify=justify)  # type: ignore[arg-type]
    for result, figure in extra:
        sign = "≤" if figure.lower_is_better else "≥"
        ok = figure.meets_target
        figures.add_row(result.name, figure.name, f"{measured(figure.value)} {figure.unit}",
                        "" if figure.target is None else f"{sign} {figure.target:,g} {figure.unit}",
                        _verdict(ok))
    console.print(figures)


def _verdict(ok: bool | None) -> str:
    """✓ or ✗ against a target; nothing for a figure that has none."""
    return "" if ok is None else "[green]✓[/]" if ok else "[red]✗[/]"


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
    figures, noise = results.figures, results.noise

    def share(key: str) -> str:
        return f"{figures[key]:.1%} ± {noise[key]:.1%}"

    lines = [
        ("the gateway keeps", f"{share('proxiedShare')} of the direct route's req/s (50 connections)",
         f"≥ {TARGETS['proxiedShare']:.0%}", figures["proxiedShare"] >= TARGETS["proxiedShare"]),
        ("its p99 is", f"{figures['proxiedP99Ratio']:.1f}× the direct route's",
         f"≤ {TARGETS['proxiedP99Ratio']:.0f}×", figures["proxiedP99Ratio"] <= TARGETS["proxiedP99Ratio"]),
        ("a service keeps", f"{share('middlewareShare')} of its bare Starlette route's req/s",
         f"≥ {TARGETS['middlewareShare']:.0%}", figures["middlewareShare"] >= TARGETS["middlewareShare"]),
        ("burst cache hit takes", f"{figures['burstHitShare']:.1%} of a miss's p50 latency",
         f"≤ {TARGETS['burstHitShare']:.0%}", figures["burstHitShare"] <= TARGETS["burstHitShare"]),
        ("tracing at sampling 1.0 costs", f"{figures['samplingCost']:+.1%} ± {noise['samplingCost']:.1%} of the "
         "service's capacity (CPU per request) against 0.0", f"≤ {TARGETS['samplingCost']:.0%}", figures["samplingCost"] <= TARGETS["samplingCost"]),
        ("... measured with a noise of", f"{figures['samplingNoise']:.1%}", f"≤ {TARGETS['samplingNoise']:.0%}",
         figures["samplingNoise"] <= TARGETS["samplingNoise"]),
        ("the eight services use", f"{figures['stackPssMb']:.0f} MiB PSS",
         f"≤ {TARGETS['stackPssMb']:.0f} MiB", figures["stackPssMb"] <= TARGETS["stackPssMb"]),
        ("a scrape of budget's /metrics costs it", f"{figures['scrapeCpuMs']:.2f} ms of CPU",
         f"≤ {TARGETS['scrapeCpuMs']:.0f} ms", figures["scrapeCpuMs"] <= TARGETS["scrapeCpuMs"]),
    ]
    if "sharedBurstShare" in figures:  # the price of one limit, one cache and one spend for the replicas
        lines.append(("two budget replicas over Redis keep",
                      f"{share('sharedBurstShare')} of one's web → burst cache hit req/s", "", None))
    if "exportCost" in figures:  # OTLP export of every trace (services/otlp.py), against none, at sampling 1.0
        lines.append(("exporting traces over OTLP costs", f"{figures['exportCost']:+.1%} ± {noise['exportCost']:.1%} "
                      f"of the service's capacity at sampling 1.0 ({figures['exportedSpans']:.0f} spans exported, "
                      f"{figures['exportDroppedSpans']:.0f} dropped)", "", None))
        lines.append(("... to a collector that is down", f"{figures['exportDownCost']:+.1%} ± "
                      f"{noise['exportDownCost']:.1%} ({figures['exportDownDroppedSpans']:.0f} spans dropped)", "", None))
    for figure, why in results.missing.items():
        lines.append((figure, f"left out: {why}", "", None))
    summary = Table(show_header=True, title="figures", title_justify="left")
    for column in ("figure", "measured", "target", ""):
        summary.add_column(column)
    for name, measured, target, ok in lines:
        summary.add_row(name, measured, target, _verdict(ok))
    console.print(summary)
    console.print("± : the robust standard error of a median of paired slices (A B B A ...), "
                  "a figure's noise on this machine now.")


def print_startup_table(results: StartupResults, *, quick: bool = False, console: Console | None = None) -> None:
    from rich.markup import escape

    console = console or Console()
    title = "tooloo bench startup: seconds after `tooloo up` began" + (" (quick)" if quick else "")
    chain = Table(title=title, title_justify="left")
    for column in ("service", "spawned", "healthy"):
        chain.add_column(column, justify="left" if column == "service" else "right")
    for name, timing in sorted(results.services.items(), key=lambda item: item[1]["healthy"]):
        chain.add_row(name, f"{timing['spawned']:.3f}", f"{timing['healthy']:.3f}")
    console.print(chain)
    figures = results.figures

    def seconds(key: str) -> str:
        return f"{figures[key]:.2f} s"

    def milliseconds(key: str) -> str:
        return f"{figures[key] * 1000:.0f} ms"

    def ratio(key: str) -> str:
        return f"{figures[key]:.2f}×"

    # (figure, key, how it reads, its target as shown); a key without a target is shown for what it is
    rows = [
        ("tooloo up → all healthy", "upSeconds", seconds, f"≤ {STARTUP_TARGETS['upSeconds']} s"),
        ("tooloo down → all stopped", "downSeconds", seconds, f"≤ {STARTUP_TARGETS['downSeconds']} s"),
        ("... its ports free after", "downPortsFreeSeconds", seconds, ""),
        ("orphans after down", "orphans", lambda key: f"{figures[key]:.0f}", "0"),
        ("tooloo status", "statusSeconds", milliseconds, f"≤ {STARTUP_TARGETS['statusSeconds'] * 1000:.0f} ms"),
        ("tooloo observe (one shot, stack up)", "observeSeconds", milliseconds,
         f"≤ {STARTUP_TARGETS['observeSeconds'] * 1000:.0f} ms"),
        ("tooloo --version", "versionSeconds", milliseconds, f"≤ {STARTUP_TARGETS['versionSeconds'] * 1000:.0f} ms"),
        ("supervisor RSS", "supervisorRssMb", lambda key: f"{figures[key]:.1f} MiB",
         f"≤ {STARTUP_TARGETS['supervisorRssMb']:.0f} MiB"),
        ("honcho: start → all ready", "honchoUpSeconds", seconds, ""),
        ("honcho: SIGTERM → ports free", "honchoPortsFreeSeconds", seconds, ""),
        ("honcho: SIGTERM → all stopped", "honchoDownSeconds", seconds, ""),
        ("up / honcho's", "upVsHoncho", ratio, f"≤ {STARTUP_TARGETS['upVsHoncho']:g}×"),
        ("down / honcho's (all stopped)", "downVsHoncho", ratio, f"≤ {STARTUP_TARGETS['downVsHoncho']:g}×"),
        ("ports free / honcho's (see below)", "portsFreeVsHoncho", ratio, ""),
    ]
    summary = Table(title="figures", title_justify="left")
    for column in ("figure", "measured", "target", ""):
        summary.add_column(column)
    reasons: dict[str, None] = {}  # each once, in the order met
    for name, key, shown, target in rows:
        if key not in figures:
            if key in results.missing:
                reasons[results.missing[key]] = None
                summary.add_row(name, "[yellow]missing[/]", target, "")
            continue
        verdict = "" if key not in STARTUP_TARGETS else _verdict(figures[key] <= STARTUP_TARGETS[key])
        summary.add_row(name, shown(key), target, verdict)
    console.print(summary)
    if "portsFreeVsHoncho" in figures:
        console.print("[dim]ports free: ~0.1 s after SIGTERM either way (uvicorn's exit tick); honcho is signalled at "
                      "once, `tooloo down` starts and reads its configuration first. No target.[/]")
    for reason in reasons:
        console.print(f"[yellow]missing: {escape(reason)}[/]")


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
