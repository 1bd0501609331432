"""The terminal views: one-shot observe at 80 columns, the --watch dashboard's layout at 80×24 and
160×50 (rendered into strings), its rates and sparklines, `tooloo top`, and both under a real
pseudo-terminal (q, SIGTERM, the terminal restored)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from conftest import Tooloo, service_client
from tooloo_cli.bench.stack import EphemeralStack
from tooloo_cli.config import Config, LoadedConfig
from tooloo_cli.errors import ToolooError
from tooloo_cli.loopback import Unreachable
from tooloo_cli.observe.dashboard import (
    SPARK_WIDTH,
    Dashboard,
    History,
    attention,
    errors_table,
    summary_table,
    throughput_table,
)
from tooloo_cli.observe.poll import Observation
from tooloo_cli.observe.rates import Counters
from tooloo_cli.observe.render import pools_lines, tables
from tooloo_cli.observe.terminal import Keyboard, Keys
from tooloo_cli.observe.top import Top

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")
RESTORED = ("\x1b[?25h", "\x1b[?1049l")  # the cursor shown, the main screen back


def _documents(loaded: LoadedConfig) -> dict[str, dict[str, Any]]:
    """Real observability documents of web, budget and reports (in process), with counters grown large."""
    async def fetch() -> dict[str, dict[str, Any]]:
        found = {}
        for name in ("web", "budget", "reports"):
            async with service_client(name, loaded) as client:
                if name == "budget":
                    await client.post("/api/v1/providers/burst", json={"prompt": "hello"})
                found[name] = (await client.get("/api/v1/system/observability")).json()
        return found

    documents = asyncio.run(fetch())
    for document in documents.values():
        document["tracer"].update(totalTraces=12_345_678, sampledTraces=1_234_567, activeTraces=1234,
                                  avgLatency=12345.67, p50Latency=2345.67, p95Latency=12345.67,
                                  p99Latency=23456.78, errorRate=0.1234)
        for breaker in (document.get("circuitBreakers") or {}).values():
            breaker.update(callCount=9_876_543, failureCount=123_456, rejectedCount=654_321)
        if document.get("cache"):
            document["cache"].update(hits=98_765_432, misses=1_234_567, diskBytes=1_234_567_890)
        if document.get("rateLimiter"):
            document["rateLimiter"].update(allowedRequests=87_654_321, deniedRequests=7_654_321)
    return documents


def _observations(documents: dict[str, dict[str, Any]]) -> list[Observation]:
    return [Observation(f"{name}.12", 50_000 + index, "up", 1.2, None, document)
            for index, (name, document) in enumerate(documents.items())] + [
        Observation("capabilities.12", 50_100, "down", 0.4, "connection refused")]


def _text(renderables: list[Any], width: int, height: int = 50, terminal: bool = False) -> str:
    console = Console(record=True, width=width, height=height, color_system=None, force_terminal=terminal)
    console.print(*renderables)
    return console.export_text()


def test_one_shot_observe_at_80_columns_cuts_no_number(stack_config: Callable[..., LoadedConfig]) -> None:
    observations = _observations(_documents(stack_config()))
    console = Console(width=80, color_system=None)
    text = _text(tables(observations, console), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert not re.search(r"[\d.,%]…", text), text  # no number ends in an ellipsis
    for number in ("12,345,678", "23456.78", "12.3%", "9,876,543", "123,456", "98,765,432", "87,654,321",
                   "7,654,321"):
        assert number in text, number
    assert "capabilities.12" in text and "connection refused" in text
    wide = _text(tables(observations, Console(width=200)), 200)
    assert "1,234,567,890" in wide and "12345.67" in wide  # what 80 columns leave out is there when it fits


def _board(observations: list[Observation], polls: int = 2) -> Dashboard:
    board = Dashboard(lambda: observations, 1.0)
    for _ in range(polls):
        board.take(board.fetch())
    return board


def _screen(board: Dashboard, width: int, height: int, *keys: str, color: bool = False) -> str:
    """The frame after `keys`, as text (with its ANSI styles when `color`)."""
    def drawn() -> str:
        console = Console(record=True, width=width, height=height, force_terminal=True,
                          color_system="standard" if color else None)
        console.print(board.frame(console, keys=True))
        return console.export_text(styles=color)

    text = drawn()
    for key in keys:
        board.key(key)
        text = drawn()
    return text


def _breaker_open(loaded: LoadedConfig) -> list[Observation]:
    documents = _documents(loaded)
    web = documents["web"]
    web["circuitBreakers"]["budget"].update(status="open")
    return _observations(documents)


def test_the_80x24_summary_fits_highlights_an_open_breaker_and_pages_by_key(
        stack_config: Callable[..., LoadedConfig]) -> None:
    board = _board(_breaker_open(stack_config()))
    screen = _screen(board, 80, 24)
    lines = screen.rstrip("\n").split("\n")
    assert len(lines) == 24 and max(len(line) for line in lines) <= 80
    assert re.match(r"service +state +req/s +p99 ms +errors +attention", lines[1])
    assert re.search(r"web\.12 +up +0\.0 +23456\.8 .*breaker budget open", screen)
    assert re.search(r"capabilities\.12 +down +- +- +- +connection refused", screen)
    assert lines[-1].startswith("q quit  tab next  1 throughput 2 errors 3 tracing 4 limits 5 caches 6 breakers")
    assert "Throughput" in screen and "Circuit breakers" not in screen
    coloured = _screen(_board(_breaker_open(stack_config())), 80, 24, color=True)
    assert re.search(r"\x1b\[1;31mbreaker budget open", coloured)  # in bold red
    assert "Circuit breakers" in _screen(board, 80, 24, "6").split("q quit")[0]
    assert "Tracing" in _screen(board, 80, 24, "3")
    pages = [_screen(board, 80, 24, "1")] + [_screen(board, 80, 24, "tab") for _ in range(8)]
    seen = {title for page in pages for title in ("Throughput", "Recent errors", "Tracing", "Services",
                                                  "Rate limiting", "Caches", "pool:", "Circuit breakers")
            if title in page}
    assert len(seen) == 8, seen  # tab walks through every section, and back to the first
    assert all(len(page.rstrip("\n").split("\n")) == 24 for page in pages)


def test_the_160x50_screen_shows_every_section(stack_config: Callable[..., LoadedConfig]) -> None:
    screen = _screen(_board(_breaker_open(stack_config())), 160, 50)
    lines = screen.rstrip("\n").split("\n")
    assert len(lines) == 50 and max(len(line) for line in lines) <= 160
    for title in ("Throughput", "Recent errors", "Tracing", "Services", "Rate limiting", "Caches", "pool:",
                  "Circuit breakers"):
        assert title in screen, title
    assert re.search(r"web\.12 +budget +open", screen)  # the open breaker, first of its table


def test_the_summary_flags_a_refusing_limiter_a_half_open_breaker_and_a_lost_redis() -> None:
    history = History()

    def budget(denied: int) -> Observation:
        return Observation("budget", 1, "up", 1.0, None, {
            "tracer": {"totalTraces": 10 * denied, "p99Latency": 734.5},
            "rateLimiter": {"deniedRequests": denied},
            "circuitBreakers": {"provider": {"status": "half_open"}},
            "redis": {"state": "fallback", "fallback": "local"}})

    history.add([budget(0)], now=0.0)
    assert [issue.plain for issue in attention(budget(0), history)] == ["breaker provider half-open",
                                                                       "redis lost: local fallback"]
    history.add([budget(7)], now=1.0)
    flags = attention(budget(7), history)
    assert [(issue.plain, issue.style) for issue in flags] == [
        ("breaker provider half-open", "yellow"), ("limiter refused 7 in 1s", "yellow"),
        ("redis lost: local fallback", "bold red")]
    text = _text([summary_table([budget(7)], history)], 80)
    # 80 columns: the numbers whole, the words wrapped; no errorCount: the errors are not known
    assert re.search(r"budget +up +70\.0 +734\.5 +- +breaker provider half-open, limiter\s+refused 7 in 1s", text)


def test_req_per_second_is_the_rate_of_the_last_seconds_not_the_minute_mean() -> None:
    counters = Counters(window=5.0)

    def seen(second: float, total: int, errors: int = 0, denied: int = 0) -> None:
        tracer = {"totalTraces": total, "errorCount": errors, "throughput": 2.5}
        counters.add([Observation("web", 1, "up", 1.0, None, {"tracer": tracer,
                                                             "rateLimiter": {"deniedRequests": denied}})], second)

    seen(0, 0)
    assert counters.rate("web") is None  # nothing to difference yet
    for second in range(1, 11):  # a 25 req/s burst for 10 s
        seen(second, 25 * second, errors=second, denied=2 * second)
    assert counters.rate("web") == pytest.approx(25.0)
    assert counters.error_rate("web") == pytest.approx(5 / 125) and counters.delta("web", "denied") == 10
    for second in range(11, 21):  # then nothing for 10 s
        seen(second, 250, errors=10, denied=20)
    assert counters.rate("web") == 0.0 and counters.error_rate("web") is None
    seen(21, 3)  # a restart: the counter went back; its window starts again
    assert counters.rate("web") is None
    seen(22, 13)
    assert counters.rate("web") == pytest.approx(10.0)
    counters.add([Observation("web", 1, "down", 1.0, "connection refused")], 23)
    assert counters.rate("web") is None


def test_sparklines_have_a_fixed_width_and_one_scale_per_table() -> None:
    history = History()
    for second in range(40):
        history.add([Observation(name, 1, "up", 1.0, None, {"tracer": {"totalTraces": per * second}})
                     for name, per in (("busy", 20), ("quiet", 10))], now=1000.0 + second)
    text = _text([throughput_table(history)], 80)
    row = {name: line.rstrip() for line in text.splitlines() for name in ("busy", "quiet")
           if line.strip().startswith(name)}
    trend = {name: line[-SPARK_WIDTH:] for name, line in row.items()}
    assert all(len(cells) == SPARK_WIDTH for cells in trend.values())
    assert trend["busy"].strip() == "█" * len(trend["busy"].strip())  # the table's top
    assert set(trend["quiet"].strip()) == {"▅"}  # half of it, on the same scale
    assert trend["busy"].startswith(" ")  # 40 s of a minute: blank on the left
    assert re.search(r"busy +20\.0 +20\.0", text)


def test_keys_are_read_only_from_a_terminal() -> None:
    assert Keys().feed(b"\t6q") == ["tab", "6", "q"] and Keys().feed(b"\x1b[A") == [] and Keys().feed(b"M") == ["m"]
    read, write = os.pipe()
    with os.fdopen(read) as stream, Keyboard(stream) as keyboard:
        os.write(write, b"q")
        started = time.monotonic()
        assert not keyboard.reading and keyboard.wait(0.05) == []  # a pipe: waited, nothing read
        assert time.monotonic() - started >= 0.05
    os.close(write)


def _status(services: dict[str, dict[str, Any]], supervisor: bool = True) -> dict[str, Any]:
    base = {"state": "running", "health": "healthy", "ready": True, "pid": 4242, "port": 1, "uptime": 75.0,
            "restarts": 0, "cpuPercent": 0.0, "rssBytes": 30 * 2**20}
    return {"supervisor": {"pid": 1, "uptime": 9.0, "rssBytes": 1} if supervisor else None,
            "services": {name: base | fields for name, fields in services.items()}}


def test_top_sorts_by_cpu_and_keys_change_the_order() -> None:
    document = _status({"web": {"cpuPercent": 3.5, "rssBytes": 40 * 2**20},
                        "budget": {"cpuPercent": 12.25, "rssBytes": 35 * 2**20, "restarts": 4},
                        "capabilities.12": {"cpuPercent": None, "rssBytes": None, "state": "failed", "pid": None},
                        "training": {"cpuPercent": 0.5, "rssBytes": 90 * 2**20}})
    second = iter(range(100))
    view = Top(lambda: document, lambda: [Observation("web", 1, "up", 1.0, None, {"tracer": {
        "totalTraces": 30 * next(second)}})], 1.0)
    view.take(view.fetch())
    time.sleep(0.2)
    view.take(view.fetch())

    def order(*keys: str) -> list[str]:
        for key in keys:
            view.key(key)
        console = Console(record=True, width=80, height=24, color_system=None, force_terminal=True)
        console.print(view.frame(console, keys=True))
        screen = console.export_text()
        lines = screen.rstrip("\n").split("\n")
        assert len(lines) == 24 and max(len(line) for line in lines) <= 80
        assert re.search(r"service +state +cpu +cpu trend +memory +restarts +req/s", screen)
        assert lines[-1].startswith("q quit  sort: c cpu m memory r restarts t req/s n name")
        return re.findall(r"^ ?(web|budget|capabilities\.12|training) ", screen, re.MULTILINE)

    assert order() == ["budget", "web", "training", "capabilities.12"]
    assert order("m") == ["training", "web", "budget", "capabilities.12"]
    assert order("r") == ["budget", "capabilities.12", "training", "web"]
    assert order("t") == ["web", "budget", "capabilities.12", "training"]
    assert order("n") == ["budget", "capabilities.12", "training", "web"]
    console = Console(record=True, width=80, height=24, color_system=None, force_terminal=True)
    console.print(view.frame(console, keys=True))
    screen = console.export_text()
    assert re.search(r"budget +running +12\.2% +[▁-█]* +35\.0 MiB +4 ", screen)  # 12.25 rounds half to even
    assert re.search(r"capabilities\.12 +failed +- +- +0 ", screen)
    trends = dict(re.findall(r"^(budget|training) +running +\S+ +(\S+) ", screen, re.MULTILINE))
    assert trends["budget"][-1] == "█" and trends["training"][-1] == "▁"  # one scale for the table
    assert "4/4 running" not in screen and "3/4 running" in screen
    stopped = Top(lambda: _status({"web": {}}, supervisor=False), lambda: [], 1.0)
    stopped.take(stopped.fetch())
    console.print(stopped.frame(console, keys=True))
    assert "no supervisor runs" in console.export_text()


# -- under a real pseudo-terminal -------------------------------------------------------------------


class Terminal:
    """A command in a pseudo-terminal of `columns`×`rows` (TERM=xterm-256color, no tmux); what it wrote is
    kept in `output`. Ended by its pid (SIGKILL) in `close` if still running; every wait is bounded."""

    def __init__(self, argv: list[str], columns: int, rows: int, keyboard: bool = True) -> None:
        self.controller, self.terminal = pty.openpty()
        fcntl.ioctl(self.terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.settings = termios.tcgetattr(self.terminal)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLOO_") and k not in ("COLUMNS", "LINES",
                                                                                             "NO_COLOR")}
        self.process = subprocess.Popen(argv, stdin=self.terminal if keyboard else subprocess.DEVNULL,
                                        stdout=self.terminal, stderr=self.terminal,
                                        env=env | {"TERM": "xterm-256color"}, start_new_session=True)
        self.output = b""

    def _read(self, timeout: float) -> None:
        if select.select([self.controller], [], [], timeout)[0]:
            try:
                self.output += os.read(self.controller, 65536)
            except OSError:  # the other side closed
                pass

    def screen(self) -> str:
        """The last whole frame drawn, as text (a frame begins at the cursor's home)."""
        frames = self.output.decode("utf-8", errors="replace").split("\x1b[H")
        whole = frames[-2] if len(frames) > 2 else frames[-1]
        return ANSI.sub("", whole).replace("\r", "")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            self._read(0.1)
            frames = self.output.decode("utf-8", errors="replace").split("\x1b[H")
            for frame in reversed(frames[1:-1]):  # whole frames only: the last may be half written
                text = ANSI.sub("", frame).replace("\r", "")
                if predicate(text):
                    return text
        raise AssertionError(f"not on screen within {timeout} s:\n{self.screen()}")

    def send(self, keys: bytes) -> None:
        os.write(self.controller, keys)

    def finish(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        self._read(0.1)
        return self.process.wait(timeout=1)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        os.close(self.controller)
        os.close(self.terminal)


def _restored(terminal: Terminal) -> None:
    output = terminal.output.decode("utf-8", errors="replace")
    tail = output[output.rfind("\x1b[H"):]
    for sequence in RESTORED:
        assert sequence in tail, repr(tail[-200:])
    assert termios.tcgetattr(terminal.terminal)[3] == terminal.settings[3]  # echo and line mode back


def _open_breaker(config: Config) -> None:
    breaker = config.services["web"].breaker
    assert breaker is not None
    breaker.failure_threshold, breaker.reset_timeout = 2, 600.0


def test_watch_at_80x24_shows_the_summary_and_an_open_breaker_and_restores_the_terminal(tmp_path: Path) -> None:
    with EphemeralStack(tmp_path, _open_breaker) as stack:
        stack.start("web")  # and budget down: web's breaker to it opens for real
        with httpx.Client(base_url=stack.url("web"), trust_env=False, timeout=5) as client:
            statuses = [client.get("/api/v1/budget").status_code for _ in range(3)]
        assert statuses == [502, 502, 503]
        argv = [sys.executable, "-m", "tooloo_cli", "--config", str(stack.config_path), "observe", "--watch",
                "--interval", "0.2", "-s", "web", "-s", "budget"]
        for ending in ("q", "SIGTERM"):
            terminal = Terminal(argv, 80, 24)
            try:
                screen = terminal.wait_for(lambda text: "breaker budget open" in text)
                lines = screen.rstrip("\n").split("\n")
                assert len(lines) == 24 and max(len(line) for line in lines) <= 80, screen
                assert re.search(r"web +up +\S+ +\S+ +\S+ +breaker budget open", screen), screen
                assert re.search(r"budget +down +- +- +- +connection refused", screen), screen
                assert "\x1b[1;31mbreaker budget open" in terminal.output.decode(errors="replace")
                if ending == "q":
                    terminal.send(b"6")
                    terminal.wait_for(lambda text: "Circuit breakers" in text)
                    terminal.send(b"q")
                    assert terminal.finish() == 0
                else:
                    terminal.process.send_signal(signal.SIGTERM)
                    assert terminal.finish() == 143
                _restored(terminal)
            finally:
                terminal.close()
        # No keyboard (stdin not a terminal): no key is read, it still redraws, Ctrl-C ends it.
        terminal = Terminal(argv, 80, 24, keyboard=False)
        try:
            first = terminal.wait_for(lambda text: "Ctrl-C to quit" in text)
            terminal.wait_for(lambda text: "updated" in text and text.split("\n")[0] != first.split("\n")[0])
            terminal.process.send_signal(signal.SIGINT)
            assert terminal.finish() == 130
            _restored(terminal)
        finally:
            terminal.close()


def test_top_under_a_terminal_sorts_by_key_and_quits(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up", "web", "training").returncode == 0
    terminal = Terminal([sys.executable, "-m", "tooloo_cli", "--config", str(t.config), "top", "--interval", "0.2"],
                        80, 24)
    try:
        # What was not started reads stopped; a CPU figure comes with the supervisor's second sample.
        row = re.compile(r"^web +running +\d+\.\d% +[▁-█]* +\d+\.\d MiB +0 +\d+\.\d ", re.MULTILINE)
        screen = terminal.wait_for(lambda text: "2/8 running" in text and row.search(text) is not None)
        assert re.search(r"service +state +cpu +cpu trend +memory +restarts +req/s", screen)
        assert re.search(r"^coach +stopped +- +- +0 +- ", screen, re.MULTILINE), screen
        terminal.send(b"n")  # by name: training before web
        terminal.wait_for(lambda text: re.search(r"^training .*\n^web ", text, re.MULTILINE) is not None)
        terminal.send(b"q")
        assert terminal.finish() == 0
        _restored(terminal)
    finally:
        terminal.close()


def test_top_refuses_an_interval_observe_interval_could_not_be(tmp_path: Path) -> None:
    # The check is observe's (`_observe_interval`, tested with every bad value in test_cli.py): NaN is the one
    # a comparison would let through.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLOO_")}
    result = subprocess.run([sys.executable, "-m", "tooloo_cli", "top", "--interval", "nan"], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "from 0.1" in result.stderr and "to 3600" in result.stderr, result.stderr
    shown = subprocess.run([sys.executable, "-m", "tooloo_cli", "top", "--help"], capture_output=True, text=True,
                           env=env, cwd=tmp_path, timeout=60)
    assert shown.returncode == 0 and "Example" in shown.stdout


# -- what the review found ---------------------------------------------------------------------------


def _up(name: str, total: int, polled_at: float = 0.0, **modules: Any) -> Observation:
    return Observation(name, 1, "up", 1.0, None, {"tracer": {"totalTraces": total, "p99Latency": 12.5}, **modules},
                       polled_at)


def test_only_1_to_6_choose_a_section() -> None:
    board = _board([_up("web", 10)])
    _screen(board, 80, 24, "6")
    breakers = board.start
    assert breakers > 0
    _screen(board, 80, 24, "²", "١", "0", "7")  # digits to str.isdigit(); "²" made int() raise, "١" is int 1
    assert board.start == breakers


def _cells(text: str, name: str, header: str, width: int) -> str:
    """The `width` cells of row `name` under the column headed `header` (left-justified)."""
    lines = text.splitlines()
    at = next(number for number, line in enumerate(lines) if header in line)
    column = lines[at].index(header)
    row = next(line for line in lines[at + 1:] if f"{name} " in line)
    return row.ljust(column + width)[column:column + width]


def test_a_service_that_went_down_shows_no_rate_and_its_trend_stops() -> None:
    history = History()
    for second in range(45):  # up at 10 req/s for 30 s, then down for 15
        history.add([_up("web", 10 * second) if second < 30 else
                     Observation("web", 1, "down", 1.0, "connection refused")], now=1000.0 + second)
    text = _text([throughput_table(history)], 80)
    assert re.search(r"web +- +10\.0 ", text), text  # no rate now; the minute's peak
    assert _cells(text, "web", "last minute", SPARK_WIDTH) == " " * 5 + "█" * 10 + " " * 5  # 3 s a cell

    running = _status({"web": {"cpuPercent": 50.0}})
    stopped = _status({"web": {"cpuPercent": None, "state": "stopped", "pid": None}})
    answers = iter([running, running, stopped, stopped])
    view = Top(lambda: next(answers), lambda: [], 1.0)
    for moment in (0.0, 10.0, 20.0, 30.0):
        view.take(view.fetch(), now=moment)
    console = Console(record=True, width=100, height=24, color_system=None, force_terminal=True)
    console.print(view.frame(console, keys=True))
    assert _cells(console.export_text(), "web", "cpu trend", 10) == " " * 4 + "█" * 4 + " " * 2  # 6 s a cell


def test_top_keeps_its_last_figures_while_the_supervisor_does_not_answer() -> None:
    document = _status({"web": {"cpuPercent": 3.5}})
    release = threading.Event()
    answers: list[Callable[[], dict[str, Any]]] = [
        lambda: document,
        lambda: (_ for _ in ()).throw(ToolooError("the supervisor (pid 7) runs but does not answer")),
        lambda: document if release.wait(5) else {},
    ]
    view = Top(lambda: answers.pop(0)(), lambda: [], 1.0, timeout=0.2)

    def screen() -> str:
        console = Console(record=True, width=80, height=24, color_system=None, force_terminal=True)
        console.print(view.frame(console, keys=True))
        return console.export_text()

    try:
        view.take(view.fetch())
        view.take(view.fetch())  # raised out of top before: exit 1
        shown = screen()
        assert "runs but does not answer" in shown and re.search(r"^web +running +3\.5% ", shown, re.MULTILINE)
        started = time.monotonic()
        view.take(view.fetch())  # the status hangs: the poll does not
        assert time.monotonic() - started < 1.0
        assert "did not answer within 0.2 s" in screen() and "web" in screen()
        release.set()
        view.take(view.fetch())  # the answer that came late is taken
        assert "answer" not in screen()
    finally:
        release.set()


def test_the_limiter_says_the_seconds_it_counted_and_unknown_errors_read_a_dash() -> None:
    history = History()
    limited = {"rateLimiter": {"deniedRequests": 0}}
    history.add([_up("budget", 0, **limited)], now=0.0)
    summary = _text([summary_table([_up("budget", 0)], history)], 80)
    # First poll: no rate, no errors known; and nothing traced yet, so no p99 (the tracer's 0 would read as fast).
    assert re.search(r"budget +up +- +- +- +-", summary), summary
    history.add([_up("budget", 50, rateLimiter={"deniedRequests": 7})], now=10.0)  # a 10 s interval
    assert [issue.plain for issue in attention(_up("budget", 50), history)] == ["limiter refused 7 in 10s"]
    summary = _text([summary_table([_up("budget", 50)], history)], 80)
    assert re.search(r"budget +up +5\.0 +12\.5 +- ", summary), summary  # no errorCount: not 0.0%


def test_the_header_the_pools_and_the_errors_table() -> None:
    polled = datetime(2026, 1, 2, 3, 4, 5).timestamp()
    pool = {"size": 2, "inUse": 1, "waiting": 0, "acquired": 3, "timeouts": 0}
    board = _board([_up("web", 10, polled, pool=pool, queryOptimizer={"batchesExecuted": 1}),
                    Observation("capabilities.12", 2, "down", 1.0, "connection refused", None, polled),
                    Observation("db", 3, "timeout", 1.0, "no answer within 0.5 s", None, polled)])
    screen = _screen(board, 160, 50)
    assert screen.startswith("tooloo observe  updated 03:04:05,"), screen  # the poll's time, not the frame's
    assert _text([pools_lines(board.observations)], 80).count("\n") == 2  # two lines, no blank one after
    errors = _text([errors_table(board.history)], 80)
    assert _cells(errors, "db", "service", 15) == "db" + " " * 13  # left-justified, under its heading


def test_escape_sequences_are_no_keys_wherever_a_read_cuts_them() -> None:
    controller, terminal = pty.openpty()
    try:
        with os.fdopen(terminal, closefd=False) as stream, Keyboard(stream) as keyboard:
            assert keyboard.reading
            for written, keys in ((b"6\x1b[C", ["6"]), (b"n\x1b", ["n"]), (b"[C", []), (b"\x1bO", []),
                                  (b"At", ["t"]), (b"\x1b[1;5", []), (b"D\t", ["tab"])):
                os.write(controller, written)
                assert keyboard.wait(2) == keys, written  # '[' and 'c' ('c': top's CPU order) before
    finally:
        os.close(controller)
        os.close(terminal)


def _frame_after(terminal: Terminal, homes: int, timeout: float) -> str:
    """The last frame, as text, once the cursor went home more than `homes` times and the frame is whole (its
    key line written): what wait_for cannot tell while no later frame follows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (terminal.output.count(b"\x1b[H") > homes and
                                               terminal.output.rstrip().endswith(b"6 breakers\x1b[0m")):
        terminal._read(0.1)
    return ANSI.sub("", terminal.output.decode(errors="replace").split("\x1b[H")[-1]).replace("\r", "")


def test_a_resized_terminal_is_redrawn_at_once(stack_config: Callable[..., LoadedConfig]) -> None:
    loaded = stack_config()
    argv = [sys.executable, "-m", "tooloo_cli", "--config", str(loaded.source), "observe", "--watch",
            "--interval", "60", "-s", "web"]  # nothing listens: and no poll, no key redraws for a minute
    terminal = Terminal(argv, 80, 24)
    try:
        first = _frame_after(terminal, 2, 15)  # the screen cleared, "polling…", then the poll's frame
        assert "connection refused" in first and len(first.rstrip("\n").split("\n")) == 24, first
        homes = terminal.output.count(b"\x1b[H")
        fcntl.ioctl(terminal.terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        terminal.process.send_signal(signal.SIGWINCH)  # what the kernel sends the terminal's foreground
        resized = _frame_after(terminal, homes, 3)
        lines = resized.rstrip("\n").split("\n")
        assert len(lines) == 30 and max(len(line) for line in lines) == 100 and "q quit" in lines[-1], resized
        terminal.send(b"q")
        assert terminal.finish() == 0
        _restored(terminal)
    finally:
        terminal.close()


def test_watch_into_a_pipe_prints_each_frame_as_it_comes_and_leaves_the_keyboard_alone(
        stack_config: Callable[..., LoadedConfig]) -> None:
    loaded = stack_config()
    controller, keyboard = pty.openpty()
    settings = termios.tcgetattr(keyboard)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLOO_")}
    process = subprocess.Popen([sys.executable, "-m", "tooloo_cli", "--config", str(loaded.source), "observe",
                                "--watch", "--interval", "0.2", "-s", "web"], stdin=keyboard,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        assert process.stdout is not None
        read = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and read.count(b"tooloo observe  updated") < 3:
            if select.select([process.stdout], [], [], 0.1)[0]:
                read += os.read(process.stdout.fileno(), 65536)
        assert read.count(b"tooloo observe  updated") >= 3 and process.poll() is None, read  # while it runs
        assert b"\x1b" not in read and b"Ctrl-C to quit" in read and b"connection refused" in read
        assert termios.tcgetattr(keyboard)[3] == settings[3]  # no cbreak: no key is read
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        os.close(controller)
        os.close(keyboard)


# -- the second review ---------------------------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that takes connections (the kernel's backlog) and never answers one."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def _on_screen(terminal: Terminal, text: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in terminal.output and time.monotonic() < deadline and terminal.process.poll() is None:
        terminal._read(0.1)
    assert text in terminal.output, terminal.screen()


def test_q_ctrl_c_and_sigterm_end_the_views_at_once_while_a_poll_hangs(
        stack_config: Callable[..., LoadedConfig], silent_port: int) -> None:
    def silent(config: Config) -> None:
        config.services["web"].port = silent_port
        config.observe.timeout = 30  # a poll that would end only in 30 s

    loaded = stack_config(silent)
    command = [sys.executable, "-m", "tooloo_cli", "--config", str(loaded.source)]
    watch, top = (["observe", "--watch", "-s", "web"], b"6 breakers"), (["top", "web"], b"every 1 s")
    for (view, last), ending, code in ((watch, signal.SIGINT, 130), (top, signal.SIGTERM, 143), (watch, b"q", 0)):
        terminal = Terminal(command + view, 80, 24)
        try:
            _on_screen(terminal, "polling…".encode(), 10)  # a first frame, before the first poll ends
            _on_screen(terminal, last, 2)  # its key line: the frame is whole
            time.sleep(0.5)  # the poll is out
            sent = time.monotonic()
            if isinstance(ending, bytes):
                terminal.send(ending)
            else:
                terminal.process.send_signal(ending)
            assert terminal.finish(timeout=5) == code, view
            assert time.monotonic() - sent < 1.5, (view, ending)  # 8 s before, the poll waited for
            _restored(terminal)
        finally:
            terminal.close()


def test_huge_figures_read_as_unknown_and_shares_stay_within_100_percent() -> None:
    name = "a-rather-long-service.12"  # squeezed to "…" by a 300-character cell before
    huge = {"uptime": 1e308, "pid": 1e306,
            "rateLimiter": {"rateLimit": 1e306, "allowRate": 1e307, "deniedRequests": 0,
                            "buckets": {"10.0.0.7": {"denied": 1e306}}},
            "cache": {"hits": 1e306, "hitRate": 1e307}, "circuitBreakers": {"provider": {"callCount": 1e306}}}
    tracer = {field: 1e306 for field in ("activeTraces", "sampledTraces", "throughput", "avgLatency", "p50Latency",
                                         "p95Latency", "p99Latency")} | {"errorRate": 1e307}
    polls = iter([Observation(name, 1, "up", 1.0, None, {"tracer": tracer | {"totalTraces": 0, "errorCount": 0}}),
                  # 1e308 errors in 0.001 requests: errors / requests is inf
                  Observation(name, 1, "up", 1.0, None, huge | {"tracer": tracer | {"totalTraces": 0.001,
                                                                                    "errorCount": 1e308}})])
    board = Dashboard(lambda: [next(polls)], 1.0)
    board.take(board.fetch())
    board.take(board.fetch())
    screens = [_text(tables(board.observations, Console(width=80)), 80), _screen(board, 80, 24),
               _screen(board, 80, 24, "3"), _screen(board, 80, 24, "4"), _screen(board, 80, 24, "5")]
    for screen in screens:
        assert not re.search(r"inf|nan", screen, re.IGNORECASE), screen
        assert not re.search(r"[\d,.]{20,}", screen), screen  # no cell of hundreds of digits
        assert max(len(line) for line in screen.splitlines()) <= 80
        assert name in screen, screen
    assert re.search(rf"{re.escape(name)} +up +\S+ +- +- ", screens[1]), screens[1]  # p99 and errors unknown
    assert "100.0%" in screens[0]  # a hit rate of 1e307: all of them


def test_top_shows_a_status_that_fails_with_an_os_error_in_its_header() -> None:
    failures: list[BaseException] = [FileNotFoundError(2, "No such file or directory", "/run/tooloo/lock"),
                                      Unreachable("nothing listens on /run/tooloo/socket")]
    view = Top(lambda: _status({"web": {}}) if not failures else (_ for _ in ()).throw(failures.pop(0)),
               lambda: [], 1.0)

    def screen() -> str:
        console = Console(record=True, width=80, height=24, color_system=None, force_terminal=True)
        console.print(view.frame(console, keys=True))
        return console.export_text()

    view.take(view.fetch())  # raised out of top before: exit 1
    assert "No such file or directory: '/run/tooloo/lock'" in screen()
    view.take(view.fetch())
    assert "nothing listens on /run/tooloo/socket" in screen()
    view.take(view.fetch())
    assert "nothing listens" not in screen() and re.search(r"^web +running ", screen(), re.MULTILINE)


def test_ctrl_z_gives_the_terminal_back_and_fg_redraws(stack_config: Callable[..., LoadedConfig]) -> None:
    loaded = stack_config()
    terminal = Terminal([sys.executable, "-m", "tooloo_cli", "--config", str(loaded.source), "observe", "--watch",
                         "--interval", "60", "-s", "web"], 80, 24)
    try:
        _on_screen(terminal, b"connection refused", 10)
        terminal.process.send_signal(signal.SIGTSTP)  # what Ctrl-Z sends the terminal's foreground
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and Path(f"/proc/{terminal.process.pid}/stat").read_text().split(
                ")")[-1].split()[0] != "T":
            terminal._read(0.05)
        terminal._read(0.1)
        _restored(terminal)  # stopped, with the main screen and the keyboard's settings back
        homes = terminal.output.count(b"\x1b[H")
        terminal.process.send_signal(signal.SIGCONT)
        redrawn = _frame_after(terminal, homes, 5)
        assert "connection refused" in redrawn, redrawn
        assert termios.tcgetattr(terminal.terminal)[3] != terminal.settings[3]  # cbreak again
        terminal.send(b"q")
        assert terminal.finish() == 0
        _restored(terminal)
    finally:
        terminal.close()
