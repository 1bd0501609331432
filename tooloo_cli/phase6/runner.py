"""Runs the packaged Phase 6 suite with pytest and prints the seed-style grouped summary.

    exit_code = run_suite(keyword="RateLimiter", verbose=True)

The summary ends with the line `N passed, N failed` (`, N skipped` when any were), and
the exit code is 1 when any check failed, as the original's test script never managed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tooloo_cli.config import LoadedConfig

SUITE_DIR = Path(__file__).parent

# The seed's groups, in its order, keyed by the file that holds each one.
GROUPS: dict[str, tuple[str, str]] = {
    "test_1_persistent_cache": ("📦", "PersistentCache"),
    "test_2_connection_pool": ("🔗", "ConnectionPool"),
    "test_3_query_optimizer": ("⚡", "QueryOptimizer"),
    "test_4_rate_limiter": ("⏱️ ", "RateLimiter"),
    "test_5_distributed_tracer": ("📊", "DistributedTracer"),
    "test_6_integration": ("🔀", "Cross-Module Integration"),
    "test_7_performance": ("⚙️ ", "Performance Benchmarks"),
    "test_8_error_handling": ("🛡️ ", "Error Handling"),
    "test_9_live_stack": ("🌐", "Live stack"),
}
LIVE_DIR = SUITE_DIR.parent / "live"


@dataclass
class CheckResult:
    group: str
    name: str
    outcome: str  # passed, failed or skipped
    message: str = ""


@dataclass
class _Collector:
    """A pytest plugin that keeps one result per check (a failed setup or teardown counts)."""

    results: dict[str, CheckResult] = field(default_factory=dict)

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when != "call" and report.outcome == "passed":
            return
        previous = self.results.get(report.nodeid)
        if previous is not None and previous.outcome == "failed":
            return
        module, _, function = report.nodeid.partition("::")
        self.results[report.nodeid] = CheckResult(
            group=Path(module).stem,
            name=function.removeprefix("test_").replace("_", " "),
            outcome=report.outcome,
            message=_failure_message(report) if report.failed else "",
        )

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.results[report.nodeid] = CheckResult(
                Path(report.nodeid).stem, "could not be collected", "failed", _failure_message(report)
            )


def _failure_message(report: Any) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return f"{crash.message}\n  at {Path(crash.path).name}:{crash.lineno}"
    return str(report.longrepr).strip().splitlines()[-1] if report.longrepr else "failed"


def run_suite(*, keyword: str | None = None, exitfirst: bool = False, verbose: bool = False,
              live: LoadedConfig | None = None) -> int:
    """Runs the suite (and the live checks against `live`'s stack) and prints the summary.

    Returns the exit code: 0, or 1 on any failure.
    """
    import pytest
    from rich.console import Console

    console = Console()
    collector = _Collector()
    plugins: list[Any] = [collector]
    paths = [str(SUITE_DIR)]
    if live is not None:
        from tooloo_cli.live import LiveStack

        plugins.append(LiveStack(live))
        paths.append(str(LIVE_DIR))
    args = [
        *paths,
        "--rootdir", str(SUITE_DIR.parent),
        "-c", os.devnull,  # the suite is self-contained: no ini file of the working directory applies
        "-p", "no:cacheprovider",  # an installed package directory may be read-only
        "-p", "no:terminal",  # the summary below replaces pytest's report
    ]
    if keyword:
        args += ["-k", keyword]
    if exitfirst:
        args.append("-x")
    pytest_exit = pytest.main(args, plugins=plugins)
    results = list(collector.results.values())
    if not results:
        console.print(f"tooloo test: no checks ran (pytest exit {int(pytest_exit)})"
                      + (f"; nothing matches -k {keyword!r}" if keyword else ""))
        return 1
    _print_summary(console, results, verbose)
    failed = sum(result.outcome == "failed" for result in results)
    return 1 if failed or pytest_exit not in (0, 5) else 0


def _print_summary(console: Any, results: list[CheckResult], verbose: bool) -> None:
    from rich.markup import escape

    console.print("[bold]🧪 Phase 6 suite[/]")
    for stem, (icon, label) in GROUPS.items():
        group = [result for result in results if result.group == stem]
        if not group:
            continue
        passed = sum(result.outcome == "passed" for result in group)
        ran = sum(result.outcome != "skipped" for result in group)
        mark = "[green]✅[/]" if passed == ran else "[red]❌[/]"
        console.print(f"{icon} {label}: {passed}/{ran} tests {mark}")
        for result in group:
            if result.outcome == "failed":
                console.print(f"    [red]✗ {escape(result.name)}[/]")
                for line in result.message.splitlines():
                    console.print(f"      {escape(line)}", highlight=False)
            elif verbose:
                symbol = "[green]✓[/]" if result.outcome == "passed" else "[yellow]-[/]"
                console.print(f"    {symbol} {escape(result.name)}")
    unknown = [result for result in results if result.group not in GROUPS]
    for result in unknown:
        console.print(f"[red]✗ {escape(result.group)}: {escape(result.name)}[/]\n  {escape(result.message)}")
    passed = sum(result.outcome == "passed" for result in results)
    failed = sum(result.outcome == "failed" for result in results)
    skipped = sum(result.outcome == "skipped" for result in results)
    console.print()
    console.print("📋 Summary:", highlight=False)
    summary = f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else "")
    console.print(summary, highlight=False, style="bold green" if not failed else "bold red")
