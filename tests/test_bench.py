"""`tooloo bench http` and `tooloo bench startup` run end to end (quick: figures, not measurements)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil

from tooloo_cli.bench.modules import shared_unavailable


def _bench(tmp_path: Path, suite: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLOO_")}
    result = subprocess.run([sys.executable, "-m", "tooloo_cli", "bench", suite, "--quick", "--json"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[suite]


def _no_stray_services(tmp_path: Path) -> None:
    strays = [p for p in psutil.process_iter(["cmdline", "status"])
              if "tooloo_cli.services" in " ".join(p.info["cmdline"] or []) and "tooloo-bench-" in
              " ".join(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE]
    assert strays == []


# OTLP export at sampling 1.0: off, to the bench's collector, to none (bench/otlp_sink.py).
EXPORT = {f"training status, sampling 1.0, export {side}" for side in ("off", "on (collector up)",
                                                                       "on (collector down)")}


def test_bench_http_measures_every_scenario_and_stops_its_stack(tmp_path: Path) -> None:
    document = _bench(tmp_path, "http")
    names = {scenario["name"] for scenario in document["scenarios"]}
    # The Redis comparison runs where redis-server and redis-py are (scripts/setup puts both on CI).
    why = shared_unavailable()
    shared = {"web → burst cache hit (2 budget replicas, Redis)"} if why is None else set()
    assert {"training status, bare Starlette route", "training status, the service (access log, tracing)",
            "training status, direct (50 connections)", "web → training status (50 connections)",
            "burst cache hit", "web → burst cache hit", "burst cache miss", "training status, sampling 0.0",
            "training status, sampling 1.0"} | shared | EXPORT == names
    assert all(s["requests"] > 0 and s["errors"] == 0 for s in document["scenarios"])
    figures = document["figures"]
    assert 0 < figures["middlewareShare"] and 0 < figures["burstHitShare"] < 1 and figures["stackPssMb"] > 0
    assert 0 < figures["proxiedShare"] < 1.5 and figures["proxiedP99Ratio"] > 0
    assert 0 < figures["scrapeCpuMs"] < 50
    if why is None:
        assert set(document["noise"]) == {"proxiedShare", "middlewareShare", "samplingCost", "sharedBurstShare",
                                          "exportCost", "exportDownCost"}
        assert 0 < figures["sharedBurstShare"] and document["missing"] == {}
    else:
        assert document["missing"] == {"sharedBurstShare": why}
    assert figures["samplingNoise"] == document["noise"]["samplingCost"] >= 0
    assert figures["exportedSpans"] > 0 and -1 < figures["exportCost"] < 1 and -1 < figures["exportDownCost"] < 1
    _no_stray_services(tmp_path)


def test_bench_startup_reports_the_chain_and_leaves_no_orphans(tmp_path: Path) -> None:
    document = _bench(tmp_path, "startup")
    assert set(document["services"]) == {"web", "training", "meta", "budget", "coach", "segmentation", "reports",
                                         "capabilities"}
    assert all(0 < t["spawned"] < t["healthy"] for t in document["services"].values())
    figures = document["figures"]
    assert figures["orphans"] == 0 and figures["upSeconds"] > 0 and figures["supervisorRssMb"] > 0
    _no_stray_services(tmp_path)


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLOO_")} | {"NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "tooloo_cli", "bench", *args], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=300)


def test_a_saved_baseline_compares_and_a_regression_exits_1(tmp_path: Path) -> None:
    baseline = tmp_path / "base.json"
    saved = _run(tmp_path, "modules", "--quick", "--save", str(baseline))
    assert saved.returncode == 0 and json.loads(baseline.read_text())["modules"]
    same = _run(tmp_path, "modules", "--quick", "--compare", str(baseline), "--threshold", "1000")
    assert same.returncode == 0 and "regressed" not in same.stdout
    impossible = json.loads(baseline.read_text())
    for result in impossible["modules"]:
        result["usPerOp"] /= 1000  # a baseline a thousand times faster: now is a regression
    baseline.write_text(json.dumps(impossible))
    worse = _run(tmp_path, "modules", "--quick", "--compare", str(baseline))
    assert worse.returncode == 1 and "regressed" in worse.stdout and "modules: cache set" in worse.stdout


def test_a_missing_or_foreign_baseline_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"hello": 1}')
    for path in ("nope.json", "other.json"):
        result = _run(tmp_path, "modules", "--quick", "--compare", str(tmp_path / path))
        assert result.returncode == 2 and "baseline" in result.stderr + result.stdout


def test_figures_know_which_way_is_better() -> None:
    from tooloo_cli.bench.baseline import compare

    def document(req: float, p99: float) -> dict:
        return {"http": {"scenarios": [{"name": "x", "requests_per_s": req, "p99_ms": p99}], "figures": {
            "middlewareShare": 0.9, "burstHitShare": 0.1, "samplingCost": 0.01, "stackPssMb": 190},
            "targets": {"middlewareShare": 0.85, "burstHitShare": 0.4, "samplingCost": 0.03, "stackPssMb": 250}}}

    changes = {c.figure.name: c for c in compare(document(1000, 2.0), document(800, 3.0))}
    assert changes["http: x req/s"].percent == 20.0  # fewer req/s: 20 % worse
    assert changes["http: x p99"].percent == 50.0  # a higher p99: 50 % worse
    assert changes["http: eight services PSS"].percent == 0.0


def test_bench_with_no_suite_runs_all_three_into_one_summary(tmp_path: Path) -> None:
    result = _run(tmp_path, "--quick")
    assert result.returncode == 0, result.stderr
    assert "figures with a target" in result.stdout
    for figure in ("modules: cache set", "http: middleware keeps", "startup: upSeconds"):
        assert figure in result.stdout
    _no_stray_services(tmp_path)


def test_strict_exits_1_exactly_when_a_figure_misses_its_target(tmp_path: Path) -> None:
    result = _run(tmp_path, "modules", "--quick", "--json", "--strict")
    entries = json.loads(result.stdout)["modules"]
    missed = [entry["name"] for entry in entries if entry["meetsTarget"] is False]
    missed += [f"{entry['name']}: {extra['name']}" for entry in entries for extra in entry.get("figures", ())
               if extra["meetsTarget"] is False]
    assert result.returncode == (1 if missed else 0), result.stderr
    assert all(f"missed modules: {name}" in result.stderr for name in missed)


def test_missed_targets_are_the_figures_on_the_wrong_side_of_theirs() -> None:
    from tooloo_cli.bench.baseline import missed_targets

    document = {"modules": [{"name": "fast", "usPerOp": 0.5, "targetUs": 1.0},
                            {"name": "slow", "usPerOp": 3.0, "targetUs": 1.0},
                            {"name": "untargeted", "usPerOp": 9.0, "targetUs": None}]}
    assert [figure.name for figure in missed_targets(document)] == ["modules: slow"]
