"""A private stack under a real Prometheus: the supervisor's /metrics, the gateway's proxied requests,
and rates and quantiles queried from what Prometheus scraped."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import httpx

from conftest import PrometheusServer, Tooloo, promtool_check_metrics
from test_metrics import value
from tooloo_cli.bench.stack import spare_port
from tooloo_cli.config import Config
from tooloo_cli.export import render
from tooloo_cli.ports import is_free
from tooloo_cli.stack import ROLES, stack_of

SCRAPE_SECONDS = 1


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=5, trust_env=False)


def test_a_real_prometheus_scrapes_the_whole_stack_and_answers_rates_and_quantiles(
        tooloo: Callable[..., Tooloo], prometheus_server: Callable[[str], PrometheusServer]) -> None:
    def with_metrics(config: Config) -> None:
        config.supervisor.metrics_port = spare_port(config)

    t = tooloo(with_metrics)
    metrics_port = t.loaded.config.supervisor.metrics_port
    result = t("up")
    assert result.returncode == 0, result.stdout + result.stderr
    web, budget = t.port("web"), t.port("budget")
    for number in range(20):
        assert _get(f"http://127.0.0.1:{web}/api/v1/providers/burst?prompt=p{number % 4}").status_code == 200

    gateway = _get(f"http://127.0.0.1:{web}/metrics").text
    assert value(gateway, "tooloo_http_requests_total", method="GET", route="/api/v1/providers/*",
                 status_class="2xx") == 20
    assert value(_get(f"http://127.0.0.1:{budget}/metrics").text, "tooloo_http_requests_total", method="GET",
                 route="/api/v1/providers/burst", status_class="2xx") == 20

    supervisor = _get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert supervisor.status_code == 200 and supervisor.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert promtool_check_metrics(supervisor.text) == ""
    for replica in ("web", "budget"):
        assert value(supervisor.text, "tooloo_replica_up", service=replica, replica=replica) == 1
        assert value(supervisor.text, "tooloo_replica_ready", service=replica, replica=replica) == 1
        assert value(supervisor.text, "tooloo_replica_state", service=replica, replica=replica, state="running") == 1
        assert value(supervisor.text, "tooloo_replica_restarts_total", service=replica, replica=replica) == 0
        assert value(supervisor.text, "tooloo_replica_resident_memory_bytes", service=replica, replica=replica) > 1e7
        assert value(supervisor.text, "tooloo_replica_cpu_seconds_total", service=replica, replica=replica) > 0.1

    server = prometheus_server(render("prometheus", t.loaded, scrape_interval=f"{SCRAPE_SECONDS}s"))
    replicas = [replica for spec in stack_of(t.loaded).specs.values() if spec.builtin for replica in spec.replicas]
    targets = _all_up(server, expected=len(replicas) + 1)  # every replica, and the supervisor
    assert {target["labels"].get("service") for target in targets} >= {spec for spec in ROLES}

    for number in range(20):  # traffic between scrapes, for a rate to see
        _get(f"http://127.0.0.1:{web}/api/v1/providers/burst?prompt=p{number % 4}")
    time.sleep(SCRAPE_SECONDS * 3)
    rate = server.api("query", query='sum(rate(tooloo_http_requests_total{service="budget"}[10s]))')
    assert rate["result"] and float(rate["result"][0]["value"][1]) > 0, rate
    quantile = server.api("query", query='histogram_quantile(0.9, sum by (le) '
                                         '(rate(tooloo_http_request_duration_seconds_bucket{service="web"}[10s])))')
    assert quantile["result"] and 0 < float(quantile["result"][0]["value"][1]) < 1, quantile
    up = server.api("query", query='tooloo_replica_up{replica="budget"}')
    assert [float(series["value"][1]) for series in up["result"]] == [1.0], up


def _all_up(server: PrometheusServer, expected: int, timeout: float = 15) -> list[dict[str, Any]]:
    """The active targets, once there are `expected` and every one is up (within `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        targets = server.api("targets")["activeTargets"]
        if len(targets) == expected and all(target["health"] == "up" for target in targets):
            return targets
        assert time.monotonic() < deadline, [(target["scrapeUrl"], target["health"], target["lastError"])
                                             for target in targets]
        time.sleep(0.2)


def test_the_supervisor_metrics_listener_follows_metrics_port_through_up_or_refuses_saying_why(
        tooloo: Callable[..., Tooloo]) -> None:
    def with_metrics(config: Config) -> None:
        config.supervisor.metrics_port = spare_port(config)

    t = tooloo(with_metrics)
    first = t.loaded.config.supervisor.metrics_port
    while (second := spare_port(t.loaded.config)) == first:
        pass
    with socket.socket() as held:  # taken when the supervisor starts: logged, not fatal (the stack matters more)
        held.bind(("127.0.0.1", first))
        held.listen()
        assert t("up", "training").returncode == 0
    assert t("up", "training").returncode == 0  # once it is free, the next `up` serves it
    assert _get(f"http://127.0.0.1:{first}/metrics").status_code == 200

    def moved_to(port: int) -> None:
        text = t.config.read_text()
        current = next(line for line in text.splitlines() if line.startswith("metrics_port = "))
        t.config.write_text(text.replace(current, f"metrics_port = {port}"))

    moved_to(second)
    assert t("up", "training").returncode == 0
    assert value(_get(f"http://127.0.0.1:{second}/metrics").text, "tooloo_replica_up", service="training",
                 replica="training") == 1
    assert is_free("127.0.0.1", first)  # let go once the new one listens

    with socket.socket() as taken:  # a port someone else holds: refused, saying so, and nothing changes
        # Not any free port: one the configuration's services do not have (one did, 48129, and the check
        # that metrics_port is no service's came first).
        while (port := spare_port(t.loaded.config)) in (first, second):
            pass
        taken.bind(("127.0.0.1", port))
        taken.listen()
        moved_to(taken.getsockname()[1])
        refused = t("up", "training")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"metrics_port {taken.getsockname()[1]} cannot be served" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert _get(f"http://127.0.0.1:{second}/metrics").status_code == 200

    moved_to(0)
    assert t("restart", "training").returncode == 0
    assert is_free("127.0.0.1", second)
