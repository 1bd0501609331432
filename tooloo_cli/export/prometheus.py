"""`tooloo export prometheus`: a whole Prometheus configuration that scrapes the stack as declared.

    from tooloo_cli.export import render
    render("prometheus", load_config())                          # the prometheus.yml the command prints
    render("prometheus", loaded, scrape_interval="1s")           # a test's Prometheus: first scrape within 1 s
    PrometheusExporter().scrape_config(Declaration.of(loaded))   # the same, as the dict it is written from

What it declares: one scrape job per built-in service, named as the service, with one
static target per replica (`host:port` from the replica's `url`, where its siblings reach
it) labelled `service` and `replica`, `metrics_path: /metrics`; a `command` service serves
no /metrics and is left out. With `[supervisor] metrics_port` set, a job `supervisor`
scrapes the supervisor on 127.0.0.1 at that port, with no `service` or `replica` label
(its own series carry those, per replica: target labels of the same names would move
them to `exported_service`). Every target comes from `stack_of`'s replicas, nothing else.

Why a whole configuration and not a fragment of `scrape_configs`: it runs as it is
(`prometheus --config.file=prometheus.yml`) and `promtool check config` checks it as it
is; a team with a Prometheus of its own copies the jobs under `scrape_configs` into it.
The interval is 15 s, the usual one (Prometheus's own default, 1 min, is coarse for a
request rate); the scrape timeout stays Prometheus's default (10 s, or the interval when
that is shorter).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from tooloo_cli.errors import UsageError
from tooloo_cli.export.base import Declaration, Exporter, File
from tooloo_cli.export.yaml_text import document
from tooloo_cli.stack import METRICS_PATH, SUPERVISOR_METRICS_HOST

FILE_NAME = "prometheus.yml"
SCRAPE_INTERVAL = "15s"
SUPERVISOR_JOB = "supervisor"
# Prometheus's duration syntax (its model.ParseDuration): units largest first, each at most once.
_DURATION = re.compile(r"(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?")


class PrometheusExporter(Exporter):
    """A prometheus.yml scraping /metrics of every replica of tooloo's services (and of the supervisor)."""

    def __init__(self, scrape_interval: str = SCRAPE_INTERVAL) -> None:
        if not (_DURATION.fullmatch(scrape_interval) and any(c in "123456789" for c in scrape_interval)):
            raise UsageError(f"scrape_interval {scrape_interval!r} is not a Prometheus duration above zero "
                             "(15s, 500ms, 1m30s)")
        self.scrape_interval = scrape_interval

    def render(self, declaration: Declaration) -> list[File]:
        loaded = declaration.loaded
        origin = f"declared in {loaded.source.name}" if loaded.source is not None else "of tooloo's built-in defaults"
        comments = [f"Prometheus scrape configuration for the tooloo stack {origin}"
                    + (f", with {', '.join(loaded.overrides)}" if loaded.overrides else "") + ".",
                    "Written by `tooloo export prometheus`: export it again when services, ports or replicas change.",
                    "Run it as it is (prometheus --config.file=prometheus.yml), or copy its jobs into your own",
                    "scrape_configs."]
        return [File(FILE_NAME, document(self.scrape_config(declaration), comments))]

    def scrape_config(self, declaration: Declaration) -> dict[str, Any]:
        """The configuration as a dict: `global` and one `scrape_configs` job per service that serves /metrics."""
        jobs = []
        for spec in declaration.stack.specs.values():
            if not spec.builtin:
                continue  # a command service of the user's own: tooloo cannot know that it serves /metrics
            targets = [{"targets": [_address(replica.url)], "labels": {"service": spec.name, "replica": replica.name}}
                       for replica in spec.replicas if replica.url is not None]
            if targets:
                jobs.append(_job(spec.name, targets))
        metrics_port = declaration.loaded.config.supervisor.metrics_port
        if metrics_port:
            jobs.append(_job(SUPERVISOR_JOB, [{"targets": [f"{SUPERVISOR_METRICS_HOST}:{metrics_port}"]}]))
        return {"global": {"scrape_interval": self.scrape_interval}, "scrape_configs": jobs}


def _job(name: str, static_configs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"job_name": name, "metrics_path": METRICS_PATH, "static_configs": static_configs}


def _address(url: str) -> str:
    """`host:port` of a replica's URL (http://host[:port], validated by the configuration's loader)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"[{host}]:{parts.port or 80}" if ":" in host else f"{host}:{parts.port or 80}"
