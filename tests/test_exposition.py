"""The Prometheus text format writer (tooloo_cli/exposition.py)."""

from __future__ import annotations

import math

import pytest

from tooloo_cli.exposition import CONTENT_TYPE, Exposition, format_value, process_samples
from tooloo_cli.resilience.histogram import LatencyBuckets


def test_families_come_with_help_and_type_and_their_samples_in_order() -> None:
    page = Exposition()
    page.counter("jobs_total", "Jobs done.", [({"kind": "a"}, 3), ({"kind": "b"}, 0)])
    page.gauge("queue_depth", "Jobs waiting.", [({}, 7)])
    assert page.text() == (
        "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\n"
        'jobs_total{kind="a"} 3\njobs_total{kind="b"} 0\n'
        "# HELP queue_depth Jobs waiting.\n# TYPE queue_depth gauge\nqueue_depth 7\n"
    )
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_a_family_without_samples_is_left_out() -> None:
    page = Exposition()
    page.gauge("nothing_here", "No series.", [])
    assert page.text() == ""


def test_label_values_and_help_are_escaped_as_the_format_says() -> None:
    page = Exposition()
    page.gauge("odd", 'Help with \\ and a\nnewline.', [({"path": 'a"b\\c\nd'}, 1)])
    lines = page.text().splitlines()
    assert lines[0] == "# HELP odd Help with \\\\ and a\\nnewline."
    assert lines[2] == 'odd{path="a\\"b\\\\c\\nd"} 1'


@pytest.mark.parametrize(("value", "text"), [
    (3, "3"), (True, "1"), (False, "0"), (0.5, "0.5"), (1e-05, "1e-05"),
    (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"),
])
def test_values_are_written_as_the_format_spells_them(value: float, text: str) -> None:
    assert format_value(value) == text


def test_a_histogram_has_cumulative_buckets_ending_at_inf_with_sum_and_count() -> None:
    buckets = LatencyBuckets()
    for seconds in (0.0005, 0.003, 0.003, 20.0):
        buckets.observe(seconds)
    page = Exposition()
    page.histogram("wait_seconds", "Waits.", [({"pool": "db"}, buckets.snapshot())])
    lines = page.text().splitlines()
    assert lines[2] == 'wait_seconds_bucket{pool="db",le="0.001"} 1'
    assert 'wait_seconds_bucket{pool="db",le="0.005"} 3' in lines
    assert lines[-3] == 'wait_seconds_bucket{pool="db",le="+Inf"} 4'
    assert lines[-2] == 'wait_seconds_sum{pool="db"} 20.0065'
    assert lines[-1] == 'wait_seconds_count{pool="db"} 4'


@pytest.mark.parametrize("write", [
    lambda page: page.counter("jobs", "A counter without _total.", [({}, 1)]),
    lambda page: page.gauge("2fast", "Not a metric name.", [({}, 1)]),
    lambda page: page.gauge("ok_name", "A bad label name.", [({"bad-label": "x"}, 1)]),
    lambda page: page.gauge("ok_name", "A reserved label name.", [({"__name__": "x"}, 1)]),
])
def test_what_the_format_forbids_is_refused(write) -> None:
    with pytest.raises(ValueError):
        write(Exposition())


def test_a_family_is_written_once() -> None:
    page = Exposition()
    page.gauge("once", "Once.", [({}, 1)])
    with pytest.raises(ValueError, match="already"):
        page.gauge("once", "Twice.", [({}, 2)])


def test_the_process_families_describe_this_process() -> None:
    page = Exposition()
    process_samples(page)
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in page.text().splitlines()
              if not line.startswith("#")}
    assert values["process_cpu_seconds_total"] > 0
    assert values["process_resident_memory_bytes"] > 10_000_000  # a Python interpreter with pytest
    assert values["process_open_fds"] >= 3
    import psutil

    assert values["process_start_time_seconds"] == pytest.approx(psutil.Process().create_time(), abs=1.0)
