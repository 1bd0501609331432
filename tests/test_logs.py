"""Logs that say what happened when: stamped lines, the supervisor's events, read back by time.

The parts (tooloo_cli/supervisor/logs.py) on real files; `tooloo logs` on files written as
the supervisor writes them, and on a real supervised stack for its events and streams.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from conftest import Tooloo
from test_cli import clean_env, tooloo

from tooloo_cli.config import Config, command_service
from tooloo_cli.supervisor.logs import Entry, Follower, Lines, RotatingLog, encode, entries, moment, parse, read, stamp

STAMPED = re.compile(r"(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d\.\d{3} ")  # the date only when not today


def _unstamped(line: str) -> str:
    assert STAMPED.match(line), line
    return STAMPED.sub("", line, count=1)


def _write(path: Path, entries: list[tuple[float, str, str]]) -> None:
    with open(path, "ab") as handle:
        for at, stream, text in entries:
            handle.write(encode(at, stream, [text.encode()]))


# -- the parts ------------------------------------------------------------------------------


def test_a_stamped_line_reads_back_as_it_was_written() -> None:
    at = 1_796_300_000.123456
    line = encode(at, "stderr", [b"INFO tooloo: started", b""]).decode()
    assert line == f"{stamp(at)} stderr INFO tooloo: started\n{stamp(at)} stderr \n"
    assert stamp(at) == "2026-12-03T12:13:20.123456Z"
    first, empty = (parse(text) for text in line.splitlines())
    assert first == Entry(pytest.approx(at, abs=1e-6), "stderr", "INFO tooloo: started")
    assert empty.text == "" and empty.stream == "stderr"


def test_an_unstamped_line_reads_as_stdout_at_the_time_before_it() -> None:
    assert parse("GET /x 200 1.0ms -") == Entry(None, "stdout", "GET /x 200 1.0ms -")
    assert parse("2026-12-03 not a stamp", 5.0) == Entry(5.0, "stdout", "2026-12-03 not a stamp")


def test_lines_wait_for_their_end_and_a_line_without_one_is_let_out() -> None:
    lines = Lines()
    assert lines.feed(b"GET /a 200") == []
    assert lines.feed(b" 1.0ms -\nGET /b") == [b"GET /a 200 1.0ms -"]
    assert lines.rest() == [b"GET /b"] and lines.rest() == []
    endless = b"x" * 70_000
    assert lines.feed(endless) == [endless]  # no newline in sight: out, not kept growing


def test_read_takes_a_window_of_time_a_pattern_and_the_last_lines_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "budget.log"
    log = RotatingLog(path, max_bytes=400, backups=5)
    for second in range(40):
        log.write(encode(1000.0 + second, "stdout", [f"GET /{second} 200".encode()]))
    log.close()
    assert len(list(tmp_path.iterdir())) > 3  # rotated several times
    assert [e.text for e in read(path, last=2)] == ["GET /38 200", "GET /39 200"]
    window = read(path, since=1005.0, until=1007.0)  # every backup is read for a window
    assert [e.text for e in window] == ["GET /5 200", "GET /6 200", "GET /7 200"]
    assert [e.text for e in read(path, since=0.0, keep=re.compile(r"/1\d "))] == [f"GET /{n} 200" for n in range(10, 20)]
    assert [e.text for e in read(path, last=1, since=0.0, keep=re.compile("/2"))] == ["GET /29 200"]


def test_a_follower_reads_whole_lines_as_they_come_and_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    follower = Follower(path)  # before the log exists
    assert follower.new() == []
    log = RotatingLog(path, max_bytes=160, backups=1)  # the x line fits, the next one rotates
    log.write(encode(1.0, "stdout", [b"first"]))
    with open(path, "ab") as handle:
        handle.write(f"{stamp(2.0)} stdout half".encode())  # a line being written
    assert [e.text for e in follower.new()] == ["first"]
    with open(path, "ab") as handle:
        handle.write(b" and the rest\n")
    assert [e.text for e in follower.new()] == ["half and the rest"]
    log.write(encode(3.0, "supervisor", [b"x" * 60]))  # this one still fits
    log.write(encode(4.0, "supervisor", [b"after the rotation"]))
    assert (tmp_path / "web.log.1").exists()
    assert [e.text for e in follower.new()] == ["x" * 60, "after the rotation"]
    log.close()


def test_moments_are_spans_back_from_now_or_times() -> None:
    now = datetime(2026, 12, 3, 15, 30).timestamp()
    assert moment("10m", now) == now - 600 and moment("1h30m", now) == now - 5400
    assert moment("90s", now) == now - 90 and moment("2d", now) == now - 2 * 86400
    assert moment("13:00", now) == datetime(2026, 12, 3, 13, 0).timestamp()
    assert moment("9:05:30", now) == datetime(2026, 12, 3, 9, 5, 30).timestamp()
    assert moment("2026-12-02T08:00", now) == datetime(2026, 12, 2, 8, 0).timestamp()
    assert moment("2026-12-02T08:00Z", now) == datetime.fromisoformat("2026-12-02T08:00+00:00").timestamp()
    for wrong in ("ten minutes", "10x", "25:00", "", "m"):
        with pytest.raises(ValueError, match="neither a span"):
            moment(wrong, now)
    with pytest.raises(ValueError, match="out of the range"):  # a date, but one no local clock reaches
        moment("0001-01-01", now)


# -- tooloo logs, on files -----------------------------------------------------------------


@pytest.fixture
def stamped(tmp_path: Path) -> Path:
    """A directory whose web and budget logs hold lines of an hour ago, a minute apart, interleaved in time."""
    (tmp_path / "tooloo.toml").write_text("")
    logs = tmp_path / ".tooloo" / "logs"
    logs.mkdir(parents=True)
    began, minute = time.time() - 3600, 60
    _write(logs / "web.log", [(began + 1 * minute, "stdout", "GET /api/v1/a 200 1.0ms -"),
                              (began + 3 * minute, "stderr", "WARNING tooloo.web: slow"),
                              (began + 5 * minute, "stdout", "GET /api/v1/c 502 9.0ms -")])
    _write(logs / "budget.log", [(began + 2 * minute, "stdout", "GET /api/v1/budget 200 1.0ms -"),
                                 (began + 4 * minute, "supervisor", "exited (killed by SIGKILL); restarting in 0.1 s (restart 1)")])
    _write(logs / "budget.2.log", [(began + 6 * minute, "stdout", "GET /api/v1/budget 200 2.0ms -")])
    return tmp_path


def test_logs_interleaves_the_services_by_time_each_line_stamped(stamped: Path) -> None:
    result = tooloo(stamped, "logs")
    assert result.returncode == 0, result.stderr
    assert [_unstamped(line) for line in result.stdout.splitlines()] == [
        "web      | GET /api/v1/a 200 1.0ms -",
        "budget   | GET /api/v1/budget 200 1.0ms -",
        "web      | WARNING tooloo.web: slow",
        "budget   | tooloo: exited (killed by SIGKILL); restarting in 0.1 s (restart 1)",
        "web      | GET /api/v1/c 502 9.0ms -",
        "budget.2 | GET /api/v1/budget 200 2.0ms -",
    ]


def test_logs_filters_by_time_and_pattern(stamped: Path) -> None:
    assert tooloo(stamped, "logs", "--since", "58m30s").stdout.count("\n") == 5
    assert tooloo(stamped, "logs", "--until", "57m30s").stdout.count("\n") == 2
    assert tooloo(stamped, "logs", "--since", "1h30m", "--until", "56m30s").stdout.count("\n") == 3
    assert tooloo(stamped, "logs", "--since", "1m").stdout == ""
    matched = tooloo(stamped, "logs", "--grep", r" 5\d\d |SIGKILL").stdout.splitlines()
    assert [_unstamped(line)[:9] for line in matched] == ["budget   ", "web      "]
    assert tooloo(stamped, "logs", "web", "-n", "1").stdout.endswith("| GET /api/v1/c 502 9.0ms -\n")


def test_logs_json_gives_each_line_its_time_service_replica_and_stream(stamped: Path) -> None:
    result = tooloo(stamped, "logs", "--json", "budget")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["service"], line["replica"], line["stream"]) for line in lines] == [
        ("budget", 1, "stdout"), ("budget", 1, "supervisor"), ("budget", 2, "stdout")]
    assert lines[1]["line"] == "exited (killed by SIGKILL); restarting in 0.1 s (restart 1)"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["ts"]) for line in lines)
    assert list(lines[0]) == ["ts", "service", "replica", "stream", "line"]


@pytest.mark.parametrize(("arguments", "said"), [
    (["--since", "yesterday"], "--since"), (["--until", "10x"], "--until"), (["--grep", "(unclosed"], "--grep"),
    (["-f", "--until", "1m"], "cannot follow up to a time"), (["--since", "1m", "--until", "10m"], "is before"),
])
def test_logs_refuses_what_it_cannot_read_as_a_usage_error(stamped: Path, arguments: list[str], said: str) -> None:
    result = tooloo(stamped, "logs", *arguments)
    assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr


def test_logs_follow_prints_new_lines_of_several_services_in_time_order(stamped: Path) -> None:
    from test_cli import _line_within

    logs = stamped / ".tooloo" / "logs"
    process = subprocess.Popen([sys.executable, "-m", "tooloo_cli", "logs", "-f", "-n", "0", "--grep", "new"],
                               cwd=stamped, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # following now: what is written next is new
        now = time.time()
        with open(logs / "web.log", "ab") as web, open(logs / "budget.log", "ab") as budget:
            budget.write(encode(now + 0.002, "stdout", [b"new from budget", b"old again"]))
            web.write(encode(now + 0.001, "stdout", [b"new from web"]))
        assert _unstamped(_line_within(process, 10)) == "web      | new from web\n"
        assert _unstamped(_line_within(process, 10)) == "budget   | new from budget\n"
    finally:
        process.kill()
        process.communicate(timeout=20)


# -- tooloo logs, on a supervised stack ------------------------------------------------------


def _talker(config: Config) -> None:
    """`talker`: a command service that says one thing on stdout and one on stderr, then sleeps."""
    talker = command_service([sys.executable, "-c", "import sys, time; print('to stdout', flush=True); "
                              "print('to stderr', file=sys.stderr, flush=True); time.sleep(600)"])
    config.services["talker"] = talker


def test_a_kill_9_and_its_restart_are_in_the_service_s_log(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo(_talker)
    assert t("up", "talker").returncode == 0
    first = t.status()["services"]["talker"]["pid"]
    os.kill(first, signal.SIGKILL)
    second = t.wait_for(lambda d: d["services"]["talker"]["pid"] not in (None, first))["services"]["talker"]["pid"]
    assert second not in (None, first)
    t.wait_for(lambda d: "to stderr" in t("logs", "talker", "-n", "1").stdout, timeout=10)
    result = t("logs", "talker", "--json", "-n", "100")
    assert result.returncode == 0, result.stderr
    said = [(line["stream"], line["line"]) for line in map(json.loads, result.stdout.splitlines())]
    assert said.index(("supervisor", f"started (pid {first})")) < said.index(("stdout", "to stdout"))
    assert ("stderr", "to stderr") in said
    exited = next(index for index, (stream, line) in enumerate(said) if line.startswith("exited (killed by SIGKILL)"))
    assert re.fullmatch(r"exited \(killed by SIGKILL\); restarting in [\d.]+ s \(restart 1\)", said[exited][1])
    assert said[exited + 1] == ("supervisor", f"started (pid {second}, restart 1)")
    assert t("down", "talker").returncode == 0
    last = json.loads(t("logs", "talker", "--json", "-n", "1").stdout)
    assert (last["stream"], last["line"]) == ("supervisor", "stopped (killed by SIGTERM)")
    shown = t("logs", "talker", "-n", "100").stdout
    assert re.search(r"^[\d:.]+ talker \| tooloo: exited \(killed by SIGKILL\); restarting", shown, re.MULTILINE)


# -- what the first reading found -------------------------------------------------------------


def test_a_carriage_return_stays_inside_its_line_and_cannot_forge_an_event(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    follower = Follower(path)
    forged = b"50%\r2020-01-01T00:00:00.000000Z supervisor exited (exit code 0); restarting in 1 s"
    log = RotatingLog(path, max_bytes=10_000, backups=1)
    log.write(encode(1000.0, "stderr", [forged, b"after"]))
    log.close()
    for found in (read(path), read(path, since=0.0), follower.new()):
        assert [(entry.stream, entry.text) for entry in found] == [("stderr", forged.decode()), ("stderr", "after")]


def test_what_is_read_before_following_is_not_followed_again(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    log = RotatingLog(path, max_bytes=10_000, backups=1)
    log.write(encode(1.0, "stdout", [b"before"]))
    follower = Follower(path)
    log.write(encode(2.0, "stdout", [b"between"]))  # after the follower began, before the past was read
    assert [entry.text for entry in read(path, end=follower.position)] == ["before"]
    assert [entry.text for entry in follower.new()] == ["between"]
    log.close()


def test_a_window_or_a_pattern_reaches_every_backup(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    log = RotatingLog(path, max_bytes=100, backups=5)  # two lines a file: all twelve kept, in six files
    for second in range(12):
        log.write(encode(1000.0 + second, "stdout", [f"line {second}".encode()]))
    log.close()
    assert (tmp_path / "web.log.5").exists()
    assert [entry.text for entry in read(path, until=1001.0)] == ["line 0", "line 1"]
    assert [entry.text for entry in read(path, keep=re.compile("line [01]$"))] == ["line 0", "line 1"]
    assert [entry.text for entry in read(path, last=1)] == ["line 11"]


def test_logs_json_with_no_log_prints_nothing(tmp_path: Path) -> None:
    (tmp_path / "tooloo.toml").write_text("")
    result = tooloo(tmp_path, "logs", "--json")
    assert result.returncode == 0 and result.stdout == ""


# -- what the second reading found ------------------------------------------------------------


def test_an_empty_log_has_no_line(tmp_path: Path) -> None:
    (tmp_path / "tooloo.toml").write_text("")
    logs = tmp_path / ".tooloo" / "logs"
    logs.mkdir(parents=True)
    (logs / "budget.log").write_bytes(b"")  # a replica never started: its log is made, and empty
    _write(logs / "web.log", [(time.time(), "stdout", "GET /x 200 1.0ms -")])
    assert read(logs / "budget.log") == [] and read(logs / "budget.log", since=0.0) == []
    shown = tooloo(tmp_path, "logs").stdout.splitlines()
    assert len(shown) == 1 and shown[0].endswith("web    | GET /x 200 1.0ms -"), shown


def test_a_rotation_between_following_and_reading_the_past_loses_and_repeats_nothing(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    log = RotatingLog(path, max_bytes=120, backups=3)  # three lines a file
    for second, text in enumerate((b"a1", b"a2")):
        log.write(encode(float(second), "stdout", [text]))
    follower = Follower(path)
    past = entries(path, since=0.0, end=follower.position)  # a slow reader: files opened, not yet read
    first = next(past)
    for second, text in enumerate((b"a3", b"b1", b"b2"), start=2):  # a3 fills the file, b1 rotates it
        log.write(encode(float(second), "stdout", [text]))
    assert (tmp_path / "web.log.1").exists()
    for second, text in enumerate((b"c1",), start=5):
        log.write(encode(float(second), "stdout", [text]))
    log.close()
    shown = [first.text, *(entry.text for entry in past), *(entry.text for entry in follower.new())]
    follower.close()
    assert shown == ["a1", "a2", "a3", "b1", "b2", "c1"]  # each once, in order


def test_following_a_log_kept_without_backups_misses_nothing_after_its_rotation(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    log = RotatingLog(path, max_bytes=100, backups=0)  # a rotation unlinks the file: its inode may be reused
    log.write(encode(1.0, "stdout", [b"first"]))
    follower = Follower(path)
    log.write(encode(2.0, "stdout", [b"second"]))
    log.write(encode(3.0, "stdout", [b"x" * 40]))  # rotates: the old file unlinked, a new one made
    log.close()
    assert [entry.text for entry in follower.new()] == ["second", "x" * 40]
    follower.close()


def test_a_line_cannot_paint_over_its_prefix(tmp_path: Path) -> None:
    (tmp_path / "tooloo.toml").write_text("")
    logs = tmp_path / ".tooloo" / "logs"
    logs.mkdir(parents=True)
    _write(logs / "web.log", [(time.time(), "stdout", "ok\r14:00:00.000 budget | tooloo: stopped\x1b[1G\ttab")])
    shown = tooloo(tmp_path, "logs").stdout
    assert "\r" not in shown and "\x1b" not in shown
    assert shown.endswith("web | ok\\x0d14:00:00.000 budget | tooloo: stopped\\x1b[1G\ttab\n"), repr(shown)
    as_json = json.loads(tooloo(tmp_path, "logs", "--json").stdout)  # JSON keeps the line as it was
    assert as_json["line"] == "ok\r14:00:00.000 budget | tooloo: stopped\x1b[1G\ttab"
