"""The shared formatting of tooloo_cli/units.py: durations, memory, text from elsewhere."""

from __future__ import annotations

import pytest

from tooloo_cli.units import duration, mebibytes, visible


@pytest.mark.parametrize(("seconds", "shown"), [(0, "0s"), (42.9, "42s"), (75.0, "1m15s"), (7620, "2h07m"),
                                                (-3, "0s"), (None, "-"), (True, "-"), (float("nan"), "-"),
                                                (float("inf"), "-"), (10**400, "-"), ("5", "-")])
def test_a_duration_reads_as_a_person_says_it(seconds: object, shown: str) -> None:
    assert duration(seconds) == shown


@pytest.mark.parametrize(("value", "shown"), [(36_700_160, "35.0 MiB"), (0, "0.0 MiB"), (None, "-"),
                                              (False, "-"), (float("inf"), "-"), (10**400, "-")])
def test_memory_is_in_mebibytes(value: object, shown: str) -> None:
    assert mebibytes(value) == shown


def test_control_characters_are_shown_not_obeyed() -> None:
    assert visible("plain ünïcode ✓") == "plain ünïcode ✓"
    assert visible("a\rb\x1b[2J\tc\x7f\x85") == "a\\x0db\\x1b[2J\tc\\x7f\\x85"  # the tab stays a tab
