"""The supervisor's GET /metrics: every replica it runs, for Prometheus.

    metrics_page(supervisor.processes.values())   # on [supervisor] metrics_port, 127.0.0.1 only

Per replica (labels `service` and `replica`): whether it runs, is healthy and is ready,
its state (one series per state in process.STATES, 1 for the current one), its restarts,
and the CPU time and resident memory of its process tree (what `tooloo status` shows,
from the same samples). The CPU time is summed over the supervisor's samples, so it only
grows, across restarts too. The supervisor's own process_* families come first.
"""

from __future__ import annotations

from collections.abc import Iterable

from tooloo_cli import __version__
from tooloo_cli.exposition import Exposition, process_samples
from tooloo_cli.supervisor.process import STATES, ManagedProcess


def metrics_page(processes: Iterable[ManagedProcess]) -> str:
    page = Exposition()
    page.gauge("tooloo_supervisor_info", "The tooloo version the supervisor runs (always 1).",
               [({"version": __version__}, 1)])
    process_samples(page)
    replicas = [({"service": process.spec.name, "replica": process.name}, process) for process in processes]
    page.gauge("tooloo_replica_up", "1 while the replica's process runs (state running).",
               [(labels, process.state == "running") for labels, process in replicas])
    page.gauge("tooloo_replica_healthy", "1 while the replica's liveness probe passes.",
               [(labels, process.health == "healthy") for labels, process in replicas])
    page.gauge("tooloo_replica_ready", "1 while the replica's readiness probe passes.",
               [(labels, process.ready) for labels, process in replicas])
    page.gauge("tooloo_replica_state", "1 for the state each replica is in, 0 for the others.",
               [({**labels, "state": state}, process.state == state)
                for labels, process in replicas for state in STATES])
    page.counter("tooloo_replica_restarts_total", "Times the supervisor restarted the replica.",
                 [(labels, process.restarts) for labels, process in replicas])
    page.counter("tooloo_replica_cpu_seconds_total", "CPU time the replica's process tree used, in seconds.",
                 [(labels, process.usage.cpu_seconds) for labels, process in replicas])
    page.gauge("tooloo_replica_resident_memory_bytes", "Resident memory of the replica's process tree, in bytes.",
               [(labels, process.usage.rss_bytes) for labels, process in replicas
                if process.usage.rss_bytes is not None])
    return page.text()
