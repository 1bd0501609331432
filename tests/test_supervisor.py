"""tooloo up / down / status / restart / logs with real processes on free ports."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import Tooloo, wait_gone

from tooloo_cli.bench.stack import spare_port
from tooloo_cli.config import Config
from tooloo_cli.ports import is_free


def _broken_capabilities_database(config: Config) -> None:
    pool = config.services["capabilities"].pool
    assert pool is not None
    pool.database = "."  # the state directory itself: SQLite cannot open it, start-up fails


def test_up_starts_every_service_healthy_behind_a_private_socket(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    result = t("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 service(s) healthy" in result.stdout
    services = t.status()["services"]
    assert all(s["state"] == "running" and s["health"] == "healthy" and s["pid"] for s in services.values())
    assert {name: s["port"] for name, s in services.items()} == {n: t.port(n) for n in services}
    assert all(s["rssBytes"] > 0 for s in services.values())
    assert oct((t.state / "supervisor.sock").stat().st_mode & 0o777) == "0o600"
    assert oct(t.state.stat().st_mode & 0o777) == "0o700"
    assert "listening on" in (t.state / "logs" / "budget.log").read_text()


def test_up_while_running_starts_only_what_is_missing(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up", "web", "training").returncode == 0
    first = t.status()["services"]
    assert first["budget"]["state"] == "stopped"
    assert t("up").returncode == 0
    after = t.status()["services"]
    assert after["web"]["pid"] == first["web"]["pid"] and after["budget"]["state"] == "running"
    again = t("up")
    assert again.returncode == 0 and "already running" in again.stdout


def test_a_killed_service_is_restarted_and_the_restart_counted(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up", "budget").returncode == 0
    old = t.status()["services"]["budget"]["pid"]
    os.kill(old, signal.SIGKILL)
    budget = t.wait_for(lambda d: d["services"]["budget"]["pid"] not in (None, old)
                        and d["services"]["budget"]["health"] == "healthy")["services"]["budget"]
    assert budget["state"] == "running" and budget["restarts"] == 1 and budget["lastExitCode"] == -9


def test_a_service_that_exits_at_once_is_marked_failed_not_restarted_forever(
        tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo(_broken_capabilities_database)
    result = t("up", "capabilities")
    assert result.returncode == 1
    assert "crash loop" in result.stdout and "capabilities |" in result.stdout  # its last log lines
    capabilities = t.status()["services"]["capabilities"]
    assert capabilities["state"] == "failed" and capabilities["pid"] is None
    assert capabilities["lastExitCode"] not in (None, 0) and capabilities["restarts"] == 2
    time.sleep(0.5)
    assert t.status()["services"]["capabilities"]["restarts"] == 2  # no spinning


def test_killing_the_supervisor_takes_every_service_with_it(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up").returncode == 0
    document = t.status()
    pids = [s["pid"] for s in document["services"].values()]
    os.kill(document["supervisor"]["pid"], signal.SIGKILL)
    assert wait_gone(pids) == []
    # The next `up` finds the stale pid file and socket, clears them and starts cleanly.
    assert (t.state / "supervisor.pid").exists()
    result = t("up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert t.status()["supervisor"]["pid"] != document["supervisor"]["pid"]


def test_down_leaves_no_process_and_every_port_free(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up").returncode == 0
    document = t.status()
    tree = [document["supervisor"]["pid"], *(s["pid"] for s in document["services"].values())]
    tree += [child.pid for child in psutil.Process(tree[0]).children(recursive=True)]
    result = t("down")
    assert result.returncode == 0 and "supervisor stopped" in result.stdout
    assert result.stdout.count("stopped ") >= 8
    assert wait_gone(tree) == []
    assert all(is_free("127.0.0.1", t.port(name)) for name in document["services"])
    assert not (t.state / "supervisor.sock").exists() and not (t.state / "supervisor.pid").exists()
    again = t("down")
    assert again.returncode == 0 and "nothing is running" in again.stdout


def test_down_of_one_service_keeps_the_others(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up", "web", "training").returncode == 0
    assert t("down", "training").returncode == 0
    services = t.status()["services"]
    assert services["training"]["state"] == "stopped" and services["web"]["state"] == "running"
    assert is_free("127.0.0.1", t.port("training"))


def test_start_speaks_as_start(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up", "training").returncode == 0
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", t.port("budget")))
        squatter.listen()
        result = t("start", "budget")
    assert result.returncode == 1
    assert f"tooloo start: budget: port {t.port('budget')} is taken by pid {os.getpid()}" in result.stdout
    assert "tooloo up" not in result.stdout


def test_a_taken_port_is_refused_naming_the_holder(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", t.port("budget")))
        squatter.listen()
        started = time.monotonic()
        result = t("up")
        elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert f"budget: port {t.port('budget')} is taken by pid {os.getpid()}" in result.stdout
    assert "nothing was started" in result.stdout
    assert not (t.state / "supervisor.pid").exists()
    assert elapsed < 5  # refused before anything was spawned


def test_stale_state_from_a_dead_supervisor_is_cleared(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    t.state.mkdir(mode=0o700, exist_ok=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (t.state / "supervisor.pid").write_text(f"{gone.pid}\n")
    (t.state / "supervisor.sock").write_text("")  # not even a socket
    assert t("status").returncode == 0
    assert not (t.state / "supervisor.pid").exists()
    result = t("up", "training")
    assert result.returncode == 0, result.stdout + result.stderr


def test_restart_gives_a_new_process_and_logs_show_prefixed_lines(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up", "training", "segmentation").returncode == 0
    old = t.status()["services"]["training"]["pid"]
    result = t("restart", "training")
    assert result.returncode == 0, result.stdout
    assert t.status()["services"]["training"]["pid"] not in (None, old)
    one = t("logs", "training", "-n", "5")
    assert one.returncode == 0 and all(re.match(r"\d\d:\d\d:\d\d\.\d{3} training \| ", line)
                                       for line in one.stdout.splitlines()), one.stdout
    new = t.status()["services"]["training"]["pid"]
    events = t("logs", "training", "-n", "1000", "--grep", "^(started|stopped)").stdout
    assert "training | tooloo: stopped (exit code 0)\n" in events and f"tooloo: started (pid {new})\n" in events
    assert events.index("tooloo: stopped") < events.index(f"tooloo: started (pid {new})")
    both = t("logs")
    assert "training     | " in both.stdout and "segmentation | " in both.stdout


def test_status_of_a_service_shows_it_in_detail_with_its_exits_and_last_lines(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up", "training").returncode == 0
    first = t.status()["services"]["training"]["pid"]
    os.kill(first, signal.SIGKILL)
    again = t.wait_for(lambda d: d["services"]["training"]["pid"] not in (None, first) and d["services"]["training"]["ready"])
    second = again["services"]["training"]["pid"]
    result = t("status", "training")
    assert result.returncode == 0, result.stderr
    shown = result.stdout
    assert re.search(rf"command +\S+ -m tooloo_cli\.services .*--port {t.port('training')} training", shown), shown
    assert re.search(rf"pid +{second}, up \d+s", shown) and re.search(r"restarts +1\n", shown)
    assert re.search(r"exits +[\d:.]+ killed by SIGKILL\n", shown)
    assert re.search(r"liveness +GET /health: ok in [\d.]+ ms", shown) and re.search(r"readiness +GET /ready: ok", shown)
    assert re.search(r"cpu, memory +[\d.]+%, [\d.]+ MiB", shown)
    assert f"log          {t.state / 'logs' / 'training.log'}" in shown
    assert f"tooloo: started (pid {second}, restart 1)" in shown.split("its last 5 log lines:")[1]
    document = json.loads(t("status", "training", "--json").stdout)
    assert list(document["services"]) == ["training"]
    assert document["services"]["training"]["exits"][0]["signal"] == "SIGKILL"
    assert t("status", "traning").returncode == 2


def test_restart_without_a_supervisor_says_so(tooloo: Callable[..., Tooloo]) -> None:
    result = tooloo()("restart", "web")
    assert result.returncode == 1 and "nothing is running" in result.stderr and "Traceback" not in result.stderr


def test_up_in_the_foreground_prefixes_output_and_stops_on_ctrl_c(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    process = subprocess.Popen([sys.executable, "-m", "tooloo_cli", "--config", str(t.config), "up",
                                "--foreground", "web", "training"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=t.env)
    try:
        document = t.wait_for(lambda d: all(d["services"][n]["health"] == "healthy" for n in ("web", "training")))
        pids = [document["services"][n]["pid"] for n in ("web", "training")]
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, output  # Ctrl-C's code, as every command's
    assert "web      | web listening on" in output and "training | training listening on" in output
    assert "tooloo: stopped" in output
    assert wait_gone(pids) == []


def test_two_concurrent_ups_start_one_supervisor(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    command = [sys.executable, "-m", "tooloo_cli", "--config", str(t.config), "up", "training"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=t.env)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=t.env)
    outputs = [first.communicate(timeout=60)[0], second.communicate(timeout=60)[0]]
    t.remember()
    assert first.returncode == 0 and second.returncode == 0, outputs
    supervisors = [p for p in psutil.process_iter(["cmdline"])
                   if "tooloo_cli.supervisor" in (p.info["cmdline"] or []) and str(t.config) in (p.info["cmdline"] or [])]
    assert len(supervisors) == 1
    assert t.status()["services"]["training"]["state"] == "running"


def test_a_second_supervisor_for_the_same_state_refuses(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up", "training").returncode == 0
    pid_before = t.status()["supervisor"]["pid"]
    second = subprocess.run([sys.executable, "-m", "tooloo_cli.supervisor", "--config", str(t.config), "web"],
                            capture_output=True, text=True, timeout=30, env=t.env)
    assert second.returncode == 1 and "already runs" in second.stderr
    assert t.status()["supervisor"]["pid"] == pid_before  # its pid file and socket were not touched
    assert t.status()["services"]["web"]["state"] == "stopped"


def test_down_of_a_failed_service_leaves_it_stopped(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo(_broken_capabilities_database)
    assert t("up", "capabilities", "training").returncode == 1
    assert t.status()["services"]["capabilities"]["state"] == "failed"
    result = t("down", "capabilities")
    assert result.returncode == 0 and "stopped capabilities" in result.stdout
    assert t.status()["services"]["capabilities"]["state"] == "stopped"


def test_the_foreground_exits_1_when_a_service_failed(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo(_broken_capabilities_database)
    process = subprocess.Popen([sys.executable, "-m", "tooloo_cli", "--config", str(t.config), "up", "--foreground",
                                "capabilities"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=t.env)
    try:
        t.wait_for(lambda d: d["services"]["capabilities"]["state"] == "failed")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1 and "(capabilities failed)" in output


def test_state_files_are_private_and_an_existing_state_dir_keeps_its_mode(tooloo: Callable[..., Tooloo],
                                                                       tmp_path: Path) -> None:
    shared = tmp_path / "shared-state"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)

    def elsewhere(config: Config) -> None:
        config.stack.state_dir = str(shared)

    t = tooloo(elsewhere)
    t.state = shared
    assert t("up", "training").returncode == 0
    assert oct(shared.stat().st_mode & 0o777) == "0o755"  # not ours to lock down
    for private in (shared / "supervisor.pid", shared / "logs" / "training.log", shared / "supervisor.sock"):
        assert oct(private.stat().st_mode & 0o077) == "0o0", private


# -- hardening: secrets, fresh configuration, races, CPU, refusals ------------------------------------


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def test_only_budget_gets_the_provider_key(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    t.env["OPENAI_API_KEY"] = "sk-only-for-budget"
    assert t("up").returncode == 0
    document = t.status()
    holders = {name for name, service in document["services"].items()
               if _environ(service["pid"]).get("OPENAI_API_KEY") == "sk-only-for-budget"}
    assert holders == {"budget"}  # before: all eight services and the supervisor
    assert "OPENAI_API_KEY" not in _environ(document["supervisor"]["pid"])


def test_restart_reads_the_configuration_afresh(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up", "training").returncode == 0
    new_port = spare_port(t.loaded.config)
    t.config.write_text(t.config.read_text().replace(f"port = {t.port('training')}\n", f"port = {new_port}\n"))
    result = t("restart", "training")
    assert result.returncode == 0, result.stdout + result.stderr  # before: probed the old port for ever
    training = t.status()["services"]["training"]
    assert training["port"] == new_port and training["health"] == "healthy"
    assert httpx.get(f"http://127.0.0.1:{new_port}/health").status_code == 200


def test_a_relative_config_path_is_the_file_it_names_from_where_the_command_ran(
        tooloo: Callable[..., Tooloo]) -> None:
    """The supervisor and the services run in the file's directory: a path relative to the command's
    own was looked for there ("sub/tooloo.toml: no such configuration file"), and `up` failed."""
    t = tooloo()
    relative = Path(t.config.parent.name) / t.config.name
    result = subprocess.run([sys.executable, "-m", "tooloo_cli", "--config", str(relative), "up", "training"],
                            cwd=t.config.parent.parent, capture_output=True, text=True, timeout=60, env=t.env)
    t.remember()
    assert result.returncode == 0, result.stdout + result.stderr
    assert t.status()["supervisor"]["config"] == str(t.config)
    assert httpx.get(f"http://127.0.0.1:{t.port('training')}/health").status_code == 200


def test_an_override_applies_to_the_start_it_was_given_to_and_does_not_stick(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    variable = "TOOLOO_SERVICES__TRAINING__TRACER__SAMPLING_RATE"

    def sampling() -> float:
        url = f"http://127.0.0.1:{t.port('training')}/api/v1/system/observability"
        return httpx.get(url).json()["tracer"]["samplingRate"]

    t.env[variable] = "1.0"
    assert t("up", "training").returncode == 0
    assert sampling() == 1.0
    del t.env[variable]
    assert t("restart", "training").returncode == 0
    assert sampling() == 0.15  # before: the first `up`'s override stuck until a full `down`


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.4])
def test_a_down_during_an_up_wins(tooloo: Callable[..., Tooloo], delay: float) -> None:
    t = tooloo()
    up = subprocess.Popen([sys.executable, "-m", "tooloo_cli", "--config", str(t.config), "up"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=t.env)
    try:
        time.sleep(delay)
        down = t("down")
        output, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
    t.remember()
    assert down.returncode == 0
    time.sleep(0.5)
    document = t.status()
    assert document["supervisor"] is None, (down.stdout, output)  # before: the stack came up after all
    assert all(is_free("127.0.0.1", t.port(name)) for name in document["services"])
    assert up.returncode in (0, 1) and "Traceback" not in output


def test_up_while_a_foreground_up_runs_answers_at_once(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    foreground = subprocess.Popen([sys.executable, "-m", "tooloo_cli", "--config", str(t.config), "up",
                                   "--foreground", "training"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, env=t.env)
    try:
        t.wait_for(lambda d: d["services"]["training"]["health"] == "healthy")
        started = time.monotonic()
        second = t("up", "training", timeout=20)  # before: hung for ever on the launch lock
        elapsed = time.monotonic() - started
        foreground.send_signal(signal.SIGINT)
        foreground.communicate(timeout=20)
    finally:
        if foreground.poll() is None:
            foreground.kill()
    assert second.returncode == 0 and "already running" in second.stdout
    assert elapsed < 5


def test_status_shows_the_cpu_a_busy_service_uses(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up", "web").returncode == 0
    url = f"http://127.0.0.1:{t.port('web')}/api/v1/system/status"
    stop = time.monotonic() + 4

    def load() -> None:
        with httpx.Client() as client:
            while time.monotonic() < stop:
                client.get(url)

    workers = [threading.Thread(target=load) for _ in range(3)]
    for worker in workers:
        worker.start()
    time.sleep(2.5)
    busy = t.status()["services"]["web"]["cpuPercent"]
    for worker in workers:
        worker.join()
    assert busy > 10, busy  # before: always 0.0


def test_a_service_that_refuses_to_start_is_failed_at_once_with_its_reason(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    ledger = t.loaded.state_path("budget.db")
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.write_bytes(b"not a ledger" * 300)
    result = t("up", "budget")
    budget = t.status()["services"]["budget"]
    assert result.returncode == 1 and "is not a usable database" in result.stdout
    assert budget["state"] == "failed" and budget["restarts"] == 0  # no crash loop for a refusal
    assert str(ledger) in budget["error"] and "tooloo up budget" in budget["error"]


def test_status_shows_a_database_moved_aside(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    database = t.loaded.state_path("capabilities.db")
    database.parent.mkdir(parents=True, exist_ok=True)
    database.write_bytes(b"garbage" * 500)
    assert t("up", "capabilities").returncode == 0  # before: a crash loop into `failed`
    warning = t.status()["services"]["capabilities"]["lastWarning"]
    assert "was corrupt" in warning and "moved it to" in warning
    table = t("status")
    assert "was corrupt" in table.stdout


# -- what `up` waits on, how it launches, what it leaves ------------------------------------------------------


def test_up_right_after_a_down_that_found_nothing_starts(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("down").returncode == 0  # writes the time of the down: nothing runs, so it returns at once
    result = t("up", "training")
    # Before: the up's start was read from btime, truncated to the second, and this down looked later.
    assert result.returncode == 0 and "healthy" in result.stdout, result.stdout + result.stderr


def test_states_are_answered_when_they_change_or_when_the_wait_is_over(tooloo: Callable[..., Tooloo]) -> None:
    from tooloo_cli.supervisor.control import ControlClient

    t = tooloo()
    assert t("up", "training").returncode == 0
    client = ControlClient(t.state / "supervisor.sock")
    now = client.call("GET", "/states")
    version = now["version"]
    started = time.monotonic()
    assert client.call("GET", f"/states?after={version - 1}&wait=5")["version"] == version  # already newer: at once
    unchanged = client.call("GET", f"/states?after={version}&wait=0.3")
    waited = time.monotonic() - started
    assert unchanged["version"] == version and 0.25 < waited < 3  # nothing changed: held for the wait, no more
    answer: dict = {}
    waiter = threading.Thread(target=lambda: answer.update(client.call(
        "GET", f"/states?after={version}&wait=20&settled=training,segmentation", timeout=30)))
    waiter.start()
    time.sleep(0.3)
    assert not answer  # held: nothing has changed since, and segmentation is not ready
    assert t("up", "segmentation").returncode == 0
    waiter.join(timeout=25)
    services = answer["services"]
    assert services["segmentation"]["ready"] and services["training"]["ready"] and answer["version"] > version
    for query in ("after=x&wait=1", "after=1&wait=31", "after=1&wait=-1"):
        status, document = client.request("GET", f"/states?{query}")
        assert status == 400 and "wait" in document["error"], query


def _supervisors_of(config: Path) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if "tooloo_cli.supervisor" in (p.info["cmdline"] or []) and str(config) in (p.info["cmdline"] or [])]


def test_an_up_that_launches_nothing_leaves_no_standby(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up", "training").returncode == 0
    (supervisor,) = _supervisors_of(t.config)
    for args in (["up", "training"], ["up", "nosuch"]):  # already running; not a service
        t(*args)
        assert [p.pid for p in _supervisors_of(t.config)] == [supervisor.pid], args  # the standby was ended


def test_the_supervisor_keeps_no_setting_and_no_secret_in_its_environment(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    t.env |= {"OPENAI_API_KEY": "sk-x", "TOOLOO_SERVICES__TRAINING__TRACER__SAMPLING_RATE": "1.0",
              "SOMETHING_ELSE": "private", "LC_TIME": "C"}
    assert t("up", "training").returncode == 0
    supervisor = _environ(t.status()["supervisor"]["pid"])
    assert not {"OPENAI_API_KEY", "SOMETHING_ELSE"} & set(supervisor)
    assert not any(key.startswith("TOOLOO_") for key in supervisor)
    assert supervisor["PATH"] == t.env["PATH"] and supervisor["LC_TIME"] == "C"
    url = f"http://127.0.0.1:{t.port('training')}/api/v1/system/observability"
    assert httpx.get(url).json()["tracer"]["samplingRate"] == 1.0  # the setting reached the service, by the handover


def test_a_standby_that_dies_before_it_can_say_why_is_replaced_by_an_ordinary_launch(
        tooloo: Callable[..., Tooloo]) -> None:
    """A standby writes nowhere until it has its orders' log: dead before that, it leaves no word, and
    `up` once failed with an empty log. One launched the ordinary way then runs the stack, or says why."""
    from tooloo_cli.supervisor.daemon import launch
    from tooloo_cli.supervisor.standby import Standby

    t = tooloo()
    doomed = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit(3)"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = launch(t.loaded, ["training"], Standby(doomed))
        t.remember()
        assert doomed.wait(timeout=10) == 3
        assert client.call("GET", "/states")["services"]["training"]["state"] in ("starting", "running")
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()
    assert t("down").returncode == 0


def test_up_no_wait_returns_before_the_start_is_known_to_fail(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo(_broken_capabilities_database)
    result = t("up", "--no-wait", "capabilities")
    assert result.returncode == 0 and "not waiting" in result.stdout, result.stdout + result.stderr
    t.wait_for(lambda d: d["services"]["capabilities"]["state"] == "failed")  # what a waiting up exits 1 for


def test_up_timeout_gives_up_waiting_with_1_and_leaves_the_start_going(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    result = t("up", "--timeout", "0.05", "training")
    assert result.returncode == 1 and "not ready in time: training" in result.stdout, result.stdout + result.stderr
    t.wait_for(lambda d: d["services"]["training"]["health"] == "healthy")


@pytest.mark.parametrize("args", [["--no-wait", "--timeout", "3"], ["-f", "--no-wait"], ["-f", "-t", "3"],
                                  ["-t", "0"], ["-t", "nan"], ["-t", "inf"]])
def test_up_refuses_wait_options_that_contradict(tooloo: Callable[..., Tooloo], args: list[str]) -> None:
    t = tooloo()
    result = t("up", *args, "training")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert t.status()["supervisor"] is None  # nothing was started


def test_stop_leaves_the_supervisor_for_start_and_restart(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    assert t("up", "training").returncode == 0
    stopped = t("stop", "training")
    assert stopped.returncode == 0 and "stopped training" in stopped.stdout, stopped.stdout + stopped.stderr
    assert "supervisor stopped" not in stopped.stdout
    document = t.status()
    assert document["supervisor"] is not None and document["services"]["training"]["state"] == "stopped"
    started = t("start", "training")
    assert started.returncode == 0 and "healthy and ready" in started.stdout, started.stdout + started.stderr
    assert t("stop", "training").returncode == 0
    again = t("restart", "training")  # a stopped service is started by restart too
    assert again.returncode == 0, again.stdout + again.stderr
    assert t.status()["services"]["training"]["health"] == "healthy"
    assert t("stop", "training").returncode == 0
    ended = t("down")  # with everything stopped, down still ends the supervisor
    assert ended.returncode == 0 and "supervisor stopped" in ended.stdout, ended.stdout
    assert t.status()["supervisor"] is None


def test_start_without_a_supervisor_says_up_starts_one(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    result = t("start", "training")
    assert result.returncode == 1 and "no supervisor runs" in result.stderr and "`tooloo up training`" in result.stderr
    assert t.status()["supervisor"] is None
    mistyped = t("stop", "trainign")
    assert mistyped.returncode == 2 and "did you mean 'training'?" in " ".join(mistyped.stderr.replace("│", " ").split())


def test_a_start_during_a_full_down_is_refused_and_the_supervisor_still_leaves(tooloo: Callable[..., Tooloo]) -> None:
    """`down` lets go of the launch lock before its POST /stop: a `start` arriving while the stop went on
    made a replica active again, and the supervisor stayed after a full `down`."""
    from tooloo_cli.config import command_service

    def stubborn(config: Config) -> None:  # ignores SIGTERM: the stop lasts the grace period
        config.services["stubborn"] = command_service([
            sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])

    t = tooloo(stubborn)
    assert t("up", "stubborn", "training").returncode == 0
    supervisor = t.status()["supervisor"]["pid"]
    down = subprocess.Popen([sys.executable, "-m", "tooloo_cli", "--config", str(t.config), "down"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=t.env)
    try:
        t.wait_for(lambda d: d["services"]["training"]["state"] == "stopped", timeout=10)
        started = t("start", "training")
        assert started.returncode == 1 and "shutting down" in started.stderr, started.stdout + started.stderr
        _, stderr = down.communicate(timeout=30)
    finally:
        if down.poll() is None:
            down.kill()
            down.wait()
    assert down.returncode == 0, stderr
    assert wait_gone([supervisor]) == []
