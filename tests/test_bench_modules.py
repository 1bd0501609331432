"""`tooloo bench modules` in quick mode: every figure is there, sane, and reported with its verdict.

Quick figures are not measurements (nothing here is timed against a target): the tests hold
the bench to what it says it measures, and the JSON to a shape baselines can read.
"""

from __future__ import annotations

import pytest
from rich.console import Console

from tooloo_cli.bench import report
from conftest import unavailable
from tooloo_cli.bench.modules import (
    CROWD,
    TARGET_US,
    BenchResult,
    ModuleFigure,
    run_module_benchmarks,
    shared_unavailable,
)


@pytest.fixture(scope="module")
def quick() -> list[BenchResult]:
    return run_module_benchmarks(runs=1, scale=0.05)


def test_every_module_figure_is_measured_in_quick_mode(quick: list[BenchResult]) -> None:
    names = [result.name for result in quick]
    for name in ("cache set", "cache get (memory hit)", "rate-limit check", CROWD, "span start+end",
                 "traced request (sampled: trace + 8 spans)", "traced request (unsampled)", "breaker call",
                 "breaker overhead", "breaker overhead (no call_timeout)", "budget day total (300k-row ledger)"):
        assert name in names, name
    assert len(set(names)) == len(names)
    assert all(result.us_per_op > 0 and result.samples >= 1 for result in quick)
    assert set(TARGET_US) <= set(names)  # no target without its figure


def test_the_shared_figures_are_measured_against_the_local_ones(quick: list[BenchResult]) -> None:
    """With redis-server and redis-py here (CI: scripts/setup), the shared check and get, each with its ratio."""
    if shared_unavailable() is not None:
        unavailable(f"the shared (Redis) benchmarks: {shared_unavailable()}")
    found = {result.name: result for result in quick}
    for name in ("rate-limit check (shared, Redis)", "cache get (shared, Redis, not in memory)"):
        (ratio,) = found[name].figures
        assert found[name].us_per_op > 0 and ratio.unit == "×" and ratio.value > 1  # a round trip costs more


def test_the_crowd_figures_hold_the_limit_in_bounded_memory(quick: list[BenchResult]) -> None:
    crowd = next(result for result in quick if result.name == CROWD)
    assert crowd.samples == 1  # deterministic: run once, whatever `runs` says
    figures = {figure.name: figure for figure in crowd.figures}
    ratio = figures["allowed ÷ allowed when all fit"]
    assert 0.5 < ratio.value <= 1.0 and ratio.target == 1.0 and ratio.lower_is_better
    assert figures["allowed short of when all fit"].value == pytest.approx((1 - ratio.value) * 100)
    buckets = figures["buckets held, at most"]
    assert buckets.target == 500 and 0 < buckets.value <= 500  # quick: max_clients 10,000 scaled to 500
    memory = figures["memory per bucket of max_clients"]
    assert memory.unit == "B" and 100 < memory.value and memory.target is not None
    assert all(figure.meets_target is not None for figure in crowd.figures)


def test_results_keep_their_json_shape_and_carry_their_figures(quick: list[BenchResult]) -> None:
    for result in quick:
        document = result.to_dict()
        assert isinstance(document["usPerOp"], float) and document["usPerOp"] > 0  # what baselines read
        assert document["meetsTarget"] == (None if result.target_us is None else result.us_per_op <= result.target_us)
        assert document["figures"] == [figure.to_dict() for figure in result.figures]
    crowd = next(result for result in quick if result.name == CROWD).to_dict()
    assert {"name", "value", "unit", "target", "lowerIsBetter", "meetsTarget"} == set(crowd["figures"][0])


def test_a_figure_knows_which_way_is_better() -> None:
    assert ModuleFigure("x", 0.9, "×", 1.0).meets_target is True
    assert ModuleFigure("x", 1.1, "×", 1.0).meets_target is False
    assert ModuleFigure("x", 1.1, "×", 1.0, lower_is_better=False).meets_target is True
    assert ModuleFigure("x", 1.1, "×").meets_target is None


def test_the_table_prints_every_figure_with_its_verdict() -> None:
    results = [
        BenchResult("cache set", 30.0, 5),  # target 25: missed
        BenchResult("breaker overhead", 0.5, 5),
        BenchResult(CROWD, 4.0, 1, (ModuleFigure("allowed ÷ allowed when all fit", 0.98, "×", 1.0),
                                    ModuleFigure("memory per bucket of max_clients", 2048.0, "B", 1024.0))),
    ]
    console = Console(record=True, width=200, color_system=None)
    report.print_module_table(results, runs=5, console=console)
    text = console.export_text()
    assert "≤ 25 ✗" in text and "≤ 1 ✓" in text
    lines = {line.split("│")[2].strip(): line for line in text.splitlines() if line.count("│") > 4}
    assert "0.980 ×" in lines["allowed ÷ allowed when all fit"] and "✓" in lines["allowed ÷ allowed when all fit"]
    assert "2,048 B" in lines["memory per bucket of max_clients"] and "✗" in lines["memory per bucket of max_clients"]
    assert "the mean of a timed batch" in text and "call_timeout 10 s" in text
