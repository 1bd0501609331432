"""procfs: a process's age, as `up` reports the time a person waited."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tooloo_cli.procfs import age, age_or_none


def test_a_process_age_counts_from_its_start_not_from_when_it_asks() -> None:
    began = time.monotonic()
    script = "import time; time.sleep(0.4); from tooloo_cli.procfs import age; import os; print(age(os.getpid()))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    waited = time.monotonic() - began
    assert 0.4 <= float(result.stdout) <= waited + 0.02  # one clock tick of slack


def test_an_ended_process_has_no_age() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(OSError):
        age(child.pid)
    assert age(os.getpid()) > 0


def test_the_age_of_a_process_that_is_gone_is_none_and_of_one_that_runs_its_age() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names nothing now
    assert age_or_none(gone.pid) is None
    ours = age_or_none(os.getpid())
    assert ours is not None and abs(ours - age(os.getpid())) < 0.1
