"""`tooloo bench startup`: how fast the supervisor brings the stack up and down, and what it leaves.

    result = run_startup_benchmarks(rounds=3)
    result.figures["upSeconds"], result.services["budget"]

Each round runs the real commands (`tooloo up`, `tooloo status`, `tooloo down`) as
subprocesses against a private configuration on free ports. Per service it reports when
it was healthy, counted from the moment `tooloo up` was started (a critical-chain view:
launch of the supervisor, spawn, first healthy probe). Orphans are processes still alive
after `down` whose command line names that private configuration.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tooloo_cli.bench.stack import clean_env, write_ephemeral_config

TARGETS = {"upSeconds": 1.2, "downSeconds": 0.5, "orphans": 0, "statusSeconds": 0.15, "versionSeconds": 0.06,
           "supervisorRssMb": 30.0}


@dataclass
class StartupResults:
    figures: dict[str, float] = field(default_factory=dict)
    services: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> spawned, healthy (s after up)

    def to_dict(self) -> dict[str, Any]:
        return {"suite": "startup", "figures": self.figures, "services": self.services, "targets": TARGETS}


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    return time.perf_counter() - started, result


def _orphans(config: Path) -> int:
    import psutil

    count = 0
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if str(config) in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE and process.pid != os.getpid():
            count += 1
    return count


def run_startup_benchmarks(rounds: int = 3) -> StartupResults:
    env = clean_env(NO_COLOR="1")
    tooloo = [sys.executable, "-m", "tooloo_cli"]
    ups, downs, orphans, rss, statuses = [], [], [], [], []
    per_service: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="tooloo-bench-startup-") as tmp:
        config = write_ephemeral_config(Path(tmp))
        command = [*tooloo, "--config", str(config)]
        try:
            for _ in range(rounds):
                up_started = time.perf_counter()
                up_seconds, up = _timed([*command, "up"], env)
                if up.returncode != 0:
                    raise RuntimeError(f"tooloo up failed:\n{up.stdout}{up.stderr}")
                status_seconds, _ = _timed([*command, "status"], env)  # the table, as a person runs it
                statuses.append(status_seconds)
                _, status = _timed([*command, "status", "--json"], env)
                document = json.loads(status.stdout)
                # The uptimes were read at the end of `status` (after its start-up), so the chain
                # is anchored where `status` finished, not where it began.
                _record_chain(document, time.perf_counter() - up_started, per_service)
                rss.append(document["supervisor"]["rssBytes"] / 1024 / 1024)
                ups.append(up_seconds)
                down_seconds, _ = _timed([*command, "down"], env)
                downs.append(down_seconds)
                orphans.append(_orphans(config))
        finally:
            subprocess.run([*command, "down"], capture_output=True, env=env, timeout=120)
    versions = [_timed([*tooloo, "--version"], env)[0] for _ in range(9)]
    results = StartupResults()
    results.figures = {
        "upSeconds": statistics.median(ups),
        "downSeconds": statistics.median(downs),
        "orphans": max(orphans),
        "statusSeconds": statistics.median(statuses),
        "versionSeconds": statistics.median(versions),
        "supervisorRssMb": statistics.median(rss),
    }
    results.services = {name: {key: statistics.median(values) for key, values in timings.items()}
                        for name, timings in per_service.items()}
    return results


def _record_chain(document: dict[str, Any], status_asked_at: float, into: dict[str, dict[str, list[float]]]) -> None:
    """Per service, seconds after `up` started at which it was spawned and first healthy."""
    for name, service in document["services"].items():
        if service["uptime"] is None or service["startupSeconds"] is None:
            continue
        spawned = status_asked_at - service["uptime"]
        timings = into.setdefault(name, {"spawned": [], "healthy": []})
        timings["spawned"].append(spawned)
        timings["healthy"].append(spawned + service["startupSeconds"])
