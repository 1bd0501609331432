"""Metrics in the Prometheus text exposition format, version 0.0.4.

    page = Exposition()
    page.counter("tooloo_cache_misses_total", "Lookups that found nothing.", [({}, 3)])
    page.gauge("tooloo_breaker_state", "1 for the state a breaker is in.",
               [({"breaker": "budget.1", "state": "open"}, 0)])
    page.histogram("tooloo_http_request_duration_seconds", "Time to answer.",
                   [({"route": "/api/v1/x"}, histogram)])      # a resilience.Histogram
    page.text()        # '# HELP tooloo_cache_misses_total Lookups that found nothing.\\n# TYPE ...'
    CONTENT_TYPE       # what GET /metrics answers with

Contract: each family is written once, its HELP and TYPE lines first, then its samples, in
the order given; a family without samples is left out. Names are checked against the
format's grammar (a ValueError is a bug of the caller); label values and HELP text are
escaped as the format says, so any text (a breaker named after a URL, an error) is safe in
them. Counters keep the `_total` the conventions ask for in their own name; a histogram's
buckets are cumulative, end with `le="+Inf"`, and come with `_sum` and `_count`.
`process_samples` gives the standard process_* families of the calling process
(client_python's names), read from /proc where there is one.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import TYPE_CHECKING

from tooloo_cli.procfs import TICKS, boot_time, read_process

if TYPE_CHECKING:  # only named: importing it would load all of resilience into the supervisor
    from tooloo_cli.resilience.histogram import Histogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = Mapping[str, str]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _escape_label(value: str) -> str:
    if "\\" not in value and '"' not in value and "\n" not in value:  # nearly every value: kept as it is
        return value
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample's value: integers as integers, +Inf, -Inf and NaN as the format spells them."""
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is bool:
        return "1" if value else "0"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


_checked_label_names: set[str] = set()  # a page writes the same few names thousands of times


def _label_pairs(labels: Labels) -> str:
    """`name="value",...` of `labels`, without the braces."""
    for name in labels:
        if name not in _checked_label_names:
            if _LABEL.fullmatch(name) is None or name.startswith("__"):
                raise ValueError(f"not a label name: {name!r}")
            _checked_label_names.add(name)
    return ",".join(f'{name}="{_escape_label(str(value))}"' for name, value in labels.items())


def _label_text(labels: Labels) -> str:
    return "{" + _label_pairs(labels) + "}" if labels else ""


@cache
def _header(name: str, kind: str, help_text: str) -> str:
    """A family's HELP and TYPE lines (checked and made once: a page writes the same families at every scrape)."""
    if _NAME.fullmatch(name) is None:
        raise ValueError(f"not a metric name: {name!r}")
    if kind == "counter" and not name.endswith("_total"):
        raise ValueError(f"a counter's name ends with _total: {name}")
    return f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} {kind}"


class Exposition:
    """A metrics page being written: families in order, each once (see the module)."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._names: set[str] = set()

    def _family(self, name: str, kind: str, help_text: str) -> None:
        if name in self._names:
            raise ValueError(f"the family {name} is already written")
        self._names.add(name)
        self._lines.append(_header(name, kind, help_text))

    def _simple(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        written = [f"{name}{_label_text(labels)} {format_value(value)}" for labels, value in samples]
        if written:
            self._family(name, kind, help_text)
            self._lines.extend(written)

    def counter(self, name: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        self._simple(name, "counter", help_text, samples)

    def gauge(self, name: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        self._simple(name, "gauge", help_text, samples)

    def histogram(self, name: str, help_text: str, series: Iterable[tuple[Labels, Histogram]]) -> None:
        written: list[str] = []
        for labels, histogram in series:
            if "le" in labels:
                raise ValueError("a histogram's own labels cannot include le")
            pairs = _label_pairs(labels)
            before_le = f"{name}_bucket{{{pairs}," if pairs else f"{name}_bucket{{"
            written.extend(f'{before_le}le="{format_value(bound)}"}} {count}' for bound, count in histogram.buckets)
            own = f"{{{pairs}}}" if pairs else ""
            written.append(f"{name}_sum{own} {format_value(histogram.sum)}")
            written.append(f"{name}_count{own} {histogram.count}")
        if written:
            self._family(name, "histogram", help_text)
            self._lines.extend(written)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n" if self._lines else ""


def process_samples(page: Exposition) -> None:
    """The calling process's CPU time, resident memory, open descriptors and start time (process_*)."""
    times = os.times()
    page.counter("process_cpu_seconds_total", "User and system CPU time spent, in seconds.",
                 [({}, times.user + times.system)])
    try:
        started_ticks, _, resident = read_process(os.getpid())
        started = boot_time() + started_ticks / TICKS
        descriptors = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError, IndexError, StopIteration):
        return  # not Linux's /proc: the CPU time is all there is to say
    page.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", [({}, resident)])
    page.gauge("process_open_fds", "Number of open file descriptors.", [({}, descriptors)])
    page.gauge("process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds.",
               [({}, started)])
