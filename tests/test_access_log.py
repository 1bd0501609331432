"""The batched access log: in order, whole lines, soon after the request, and nothing lost on SIGTERM."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import httpx

from tooloo_cli.bench.stack import EphemeralStack
from tooloo_cli.services.access_log import BatchedLog


def test_lines_wait_for_a_batch_then_go_out_whole_and_in_order() -> None:
    async def scenario() -> tuple[str, str, str]:
        out = io.StringIO()
        log = BatchedLog(out, max_bytes=64, max_delay=0.05)
        log.write("GET /a 200 1.0ms -\n")
        log.write("GET /b 200 1.0ms -\n")
        held = out.getvalue()  # neither 4 KB nor 50 ms yet
        await asyncio.sleep(0.2)
        timed = out.getvalue()
        for index in range(4):  # past max_bytes: written at once, no timer needed
            log.write(f"GET /{index} 200 1.0ms -\n")
        return held, timed, out.getvalue()

    held, timed, full = asyncio.run(scenario())
    assert held == "" and timed == "GET /a 200 1.0ms -\nGET /b 200 1.0ms -\n"
    assert full.endswith("GET /3 200 1.0ms -\n") and full.count("\n") == 6


def test_a_line_written_with_no_loop_running_is_not_held() -> None:
    out = io.StringIO()
    BatchedLog(out).write("GET /late 200 1.0ms -\n")
    assert out.getvalue() == "GET /late 200 1.0ms -\n"


def test_a_service_logs_every_request_and_loses_none_on_sigterm(tmp_path: Path) -> None:
    with EphemeralStack(tmp_path) as stack:
        stack.start("training")
        url = f"{stack.url('training')}/api/v1/training/status"
        first = f"{10**6:032x}"

        def traced(index: int) -> dict[str, str]:  # the trace id says which request a line is
            return {"traceparent": f"00-{index:032x}-{'1' * 16}-01"}

        with httpx.Client(trust_env=False) as client:
            client.get(url, headers=traced(10**6))
            deadline = time.monotonic() + 5
            while first not in stack.log("training").read_text() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert first in stack.log("training").read_text()  # out soon, with no more traffic
            for index in range(1, 201):
                client.get(url, headers=traced(index))
        assert stack.stop("training") == 0  # SIGTERM right after the last answer
    logged = [line.split()[-1] for line in stack.log("training").read_text().splitlines()
              if line.startswith("GET /api/v1/training/status")]
    assert logged == [first] + [f"{index:032x}" for index in range(1, 201)]


def test_a_timer_left_on_a_finished_loop_does_not_hold_the_next_loops_lines() -> None:
    out = io.StringIO()
    log = BatchedLog(out, max_delay=0.05)

    async def write_and_leave() -> None:
        log.write("GET /first 200 1.0ms -\n")  # its timer is on this loop, which ends before it fires

    async def write_and_wait() -> None:
        log.write("GET /second 200 1.0ms -\n")
        await asyncio.sleep(0.2)

    asyncio.run(write_and_leave())
    asyncio.run(write_and_wait())
    assert out.getvalue() == "GET /first 200 1.0ms -\nGET /second 200 1.0ms -\n"


def test_monitoring_polls_are_logged_only_when_they_fail(tmp_path: Path) -> None:
    with EphemeralStack(tmp_path) as stack:
        stack.start("budget")
        base = stack.url("budget")
        with httpx.Client(trust_env=False) as client:
            for path in ("/api/v1/system/observability", "/api/v1/providers/resilience-status", "/ready"):
                for _ in range(3):  # what `observe --watch`, the gateway's status poll and the supervisor make
                    assert client.get(f"{base}{path}").status_code == 200
            assert client.post(f"{base}/api/v1/system/observability").status_code == 405
            assert client.get(f"{base}/api/v1/budget").status_code == 200
        assert stack.stop("budget") == 0
    lines = stack.log("budget").read_text().splitlines()
    assert not any(line.startswith("GET /api/v1/system/observability") for line in lines)
    assert not any(line.startswith("GET /api/v1/providers/resilience-status") for line in lines)
    assert not any(line.startswith("GET /ready") for line in lines)
    assert any(line.startswith("POST /api/v1/system/observability 405 ") for line in lines)
    assert any(line.startswith("GET /api/v1/budget 200 ") for line in lines)
