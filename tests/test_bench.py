"""`tooloo bench http` and `tooloo bench startup` run end to end (quick: figures, not measurements)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil


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


def test_bench_http_measures_every_scenario_and_stops_its_stack(tmp_path: Path) -> None:
    document = _bench(tmp_path, "http")
    names = {scenario["name"] for scenario in document["scenarios"]}
    assert {"web /health (bare)", "web /api/v1/system/health (trace + limit)", "web → training (proxied)",
            "burst cache hit", "burst cache miss", "training status, sampling 0.0",
            "training status, sampling 1.0"} == names
    assert all(s["requests"] > 0 and s["errors"] == 0 for s in document["scenarios"])
    figures = document["figures"]
    assert 0 < figures["middlewareShare"] and 0 < figures["burstHitShare"] < 1 and figures["stackPssMb"] > 0
    _no_stray_services(tmp_path)


def test_bench_startup_reports_the_chain_and_leaves_no_orphans(tmp_path: Path) -> None:
    document = _bench(tmp_path, "startup")
    assert set(document["services"]) == {"web", "training", "meta", "budget", "coach", "segmentation", "reports",
                                         "capabilities"}
    assert all(0 < t["spawned"] < t["healthy"] for t in document["services"].values())
    figures = document["figures"]
    assert figures["orphans"] == 0 and figures["upSeconds"] > 0 and figures["supervisorRssMb"] > 0
    _no_stray_services(tmp_path)
