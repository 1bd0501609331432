"""The supervisor on the stack model, for real: a service of one's own, dependency order, replicas."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import Tooloo, alive, flood, wait_gone
from tooloo_cli.bench.stack import free_port, room_for_replicas, spare_port
from tooloo_cli.config import Config, command_service
from tooloo_cli.ports import is_free

# A service of one's own: answers /health on its port; on start and on SIGTERM it writes
# down whether training's /health answered at that moment.
WATCHER = '''
import http.server, signal, sys, threading, urllib.request
port, training, record = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def training_answers():
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return opener.open(training + "/health", timeout=1).status == 200
    except OSError:
        return False

def note(event):
    with open(record, "a") as out:
        out.write(f"{event} training={'up' if training_answers() else 'down'}\\n")

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass

note("started")
print("watcher serving", flush=True)
server = http.server.HTTPServer(("127.0.0.1", port), Health)
def stop(*_):
    note("stopping")
    threading.Thread(target=server.shutdown).start()
signal.signal(signal.SIGTERM, stop)
server.serve_forever()
'''


def _with_watcher(directory: Path) -> Callable[[Config], None]:
    script = directory / "watcher.py"
    script.write_text(WATCHER, encoding="utf-8")

    def edit(config: Config) -> None:
        port = spare_port(config)  # free now, and none of the stack's
        training = f"http://127.0.0.1:{config.services['training'].port}"
        watcher = command_service([sys.executable, str(script), str(port), training, str(directory / "record")])
        watcher.port, watcher.health_path, watcher.depends_on = port, "/health", ["training"]
        config.services["watcher"] = watcher

    return edit


def test_up_again_while_a_service_runs_unready_waits_for_it_and_does_not_call_its_own_port_taken(
        tooloo: Callable[..., Tooloo], tmp_path: Path) -> None:
    """Nothing asked for was missing, so every replica of the stack was checked for a taken port (an empty
    list meant all of them): the unready service's own port was reported taken, and `up` started nothing."""
    def never_ready(config: Config) -> None:
        _with_watcher(tmp_path)(config)
        watcher = config.services["watcher"]
        watcher.ready_path, watcher.depends_on = "/ready", []  # /ready: 404, always; /health: 200
        config.supervisor.startup_timeout = 2.0

    t = tooloo(never_ready)
    first = t("up", "watcher", "--timeout", "2.5")  # without: its startup timeout and 5 s to spare, each
    assert first.returncode == 1 and "not ready in time: watcher" in first.stdout, first.stdout + first.stderr
    again = t("up", "watcher", "--timeout", "2.5")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "is taken by" not in again.stdout and "not ready in time: watcher" in again.stdout, again.stdout


def test_a_command_service_starts_after_its_dependency_is_ready_and_stops_before_it(
        tooloo: Callable[..., Tooloo], tmp_path: Path) -> None:
    t = tooloo(_with_watcher(tmp_path))
    result = t("up", "watcher")  # its dependency comes with it
    assert result.returncode == 0, result.stdout + result.stderr
    services = t.status()["services"]
    assert services["watcher"]["state"] == "running" and services["watcher"]["ready"]
    assert services["training"]["state"] == "running" and services["web"]["state"] == "stopped"
    assert services["watcher"]["observable"] is False and services["watcher"]["probes"]["liveness"]["ok"]
    assert "watcher serving" in t("logs", "watcher").stdout
    observed = t("observe", "--json", "-s", "watcher", "-s", "training")
    assert observed.returncode == 0, observed.stdout + observed.stderr  # n/a is no failure
    assert '"state": "n/a"' in observed.stdout
    assert t("down").returncode == 0
    assert (tmp_path / "record").read_text().splitlines() == ["started training=up", "stopping training=up"]


def test_a_dependency_that_fails_fails_its_dependents_saying_why(tooloo: Callable[..., Tooloo],
                                                                tmp_path: Path) -> None:
    def edit(config: Config) -> None:
        _with_watcher(tmp_path)(config)
        config.services["training"].tracer.sampling_rate = 0.5  # type: ignore[union-attr]
        broken = command_service([sys.executable, "-c", "import sys; sys.exit(3)"])
        # A port it never binds: never ready, it cannot open its dependent's gate in the moment it lives
        # (without one, alive was ready, and watcher started now and then: CI saw it "starting").
        broken.restart, broken.port = "no", spare_port(config)
        config.services["broken"] = broken
        config.services["watcher"].depends_on = ["broken"]

    t = tooloo(edit)
    result = t("up", "watcher")
    assert result.returncode == 1
    # up exits at broken's exit; the supervisor marks its dependent failed a moment later.
    services = t.wait_for(lambda d: d["services"]["watcher"]["state"] != "waiting")["services"]
    assert services["broken"]["state"] == "exited" and services["broken"]["lastExitCode"] == 3
    assert services["watcher"]["state"] == "failed"
    assert services["watcher"]["error"] == "not started: its dependency broken exited (exit code 3)"


def _budget_with_room(config: Config) -> None:
    """Budget on a port whose next one is free too, and no other service's: room for a second replica."""
    room_for_replicas(config, "budget", 2)
    config.services["budget"].replicas = 1  # one until a test asks for two


def _budget_pair(config: Config) -> None:
    """Budget as two replicas, behind a gateway whose limit is out of the way."""
    _budget_with_room(config)
    config.services["budget"].replicas = 2
    limiter = config.services["web"].rate_limiter
    assert limiter is not None
    limiter.capacity = 1_000_000  # the load below measures the replicas, not the gateway's limit


def _errors_logged(t: Tooloo) -> dict[str, list[str]]:
    """What each service logged of 5xx answers and exceptions: where a failed answer came from (a test
    that sees one fail rarely says, with it, which process answered it and why)."""
    found = {}
    for log in sorted((t.state / "logs").glob("*.log")):
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        hits = [index for index, line in enumerate(lines)
                if re.search(r" 5\d\d [\d.]+ms ", line) or "Traceback" in line or "unhandled" in line]
        if hits:
            found[log.name] = [line for index in hits[:3] for line in lines[index:index + 25]]
    return found


def test_two_budget_replicas_share_web_traffic_and_one_killed_costs_clients_nothing(
        tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo(_budget_pair)
    result = t("up", "web", "budget")
    assert result.returncode == 0, result.stdout + result.stderr
    services = t.status()["services"]
    first, second = services["budget.1"], services["budget.2"]
    assert first["port"] + 1 == second["port"] and first["pid"] != second["pid"]
    assert (t.state / "logs" / "budget.2.log").exists()
    web = f"http://127.0.0.1:{t.port('web')}"
    with httpx.Client(base_url=web, trust_env=False) as client:
        for _ in range(8):
            assert client.get("/api/v1/budget").status_code == 200
        breakers = client.get("/api/v1/system/observability").json()["circuitBreakers"]
        assert breakers["budget.1"]["callCount"] == breakers["budget.2"]["callCount"] == 4  # round robin
        with flood(web, lambda own, _: own.get("/api/v1/budget"), count=1500, seconds=20, clients=4) as statuses:
            time.sleep(0.5)
            os.kill(first["pid"], signal.SIGKILL)
            time.sleep(1.5)
    assert statuses[200] > 100 and set(statuses) == {200}, (statuses, _errors_logged(t))
    restarted = t.wait_for(lambda d: d["services"]["budget.1"]["ready"] and d["services"]["budget.1"]["restarts"] == 1)
    assert restarted["services"]["budget.1"]["pid"] != first["pid"]
    assert not alive(first["pid"])


def test_meta_stays_ready_while_training_is_down(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo()
    alone = t("up", "meta")
    assert alone.returncode == 0, alone.stdout + alone.stderr  # meta itself is fine...
    assert "meta is ready, but cannot use training yet" in alone.stdout  # ...and `up` says what it lacks
    both = t("up", "training")
    assert both.returncode == 0 and "cannot use" not in both.stdout
    assert t("down", "training").returncode == 0
    meta = f"http://127.0.0.1:{t.port('meta')}"
    assert httpx.get(f"{meta}/ready", trust_env=False).status_code == 200
    deep = httpx.get(f"{meta}/dependencies", trust_env=False)
    assert deep.status_code == 503 and deep.json()["failing"] == ["training"]
    time.sleep(0.5)  # a few readiness probes later, the supervisor still calls it ready
    assert t.status()["services"]["meta"]["ready"] is True


def test_a_command_that_cannot_be_run_fails_at_once_saying_why(tooloo: Callable[..., Tooloo]) -> None:
    def edit(config: Config) -> None:
        config.services["ghost"] = command_service(["/nonexistent/program", "--flag"])

    t = tooloo(edit)
    result = t("up", "ghost")
    assert result.returncode == 1
    ghost = t.status()["services"]["ghost"]
    assert ghost["state"] == "failed" and ghost["restarts"] == 0
    assert ghost["error"].startswith("cannot run /nonexistent/program in ") and "No such file" in ghost["error"]


def test_a_change_of_replicas_applies_on_restart_and_leaves_nothing_behind(tooloo: Callable[..., Tooloo]) -> None:
    t = tooloo(_budget_with_room)
    assert t("up", "budget").returncode == 0
    single = t.status()["services"]["budget"]["pid"]
    port = t.port("budget")
    text = t.config.read_text().replace(f"[services.budget]\nport = {port}\nreplicas = 1\n",
                                        f"[services.budget]\nport = {port}\nreplicas = 2\n")
    assert "replicas = 2" in text
    t.config.write_text(text)
    result = t("restart", "budget")
    assert result.returncode == 0, result.stdout + result.stderr
    services = t.status()["services"]
    assert "budget" not in services and services["budget.1"]["ready"] and services["budget.2"]["ready"]
    assert not alive(single)
    assert httpx.get(f"http://127.0.0.1:{port + 1}/health", trust_env=False).json()["port"] == port + 1


def test_down_and_logs_reach_a_command_service_when_the_file_breaks(tooloo: Callable[..., Tooloo],
                                                                   tmp_path: Path) -> None:
    t = tooloo(_with_watcher(tmp_path))
    assert t("up", "watcher").returncode == 0
    t.config.write_text(t.config.read_text() + "\n[broken\n")
    logs = t("logs")
    assert logs.returncode == 0 and "warning" in logs.stderr
    assert any(re.fullmatch(r"[\d:.]+ watcher +\| watcher serving", line) for line in logs.stdout.splitlines())
    down = t("down", "watcher")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped watcher" in down.stdout


# A service of one's own that answers /health and ignores SIGTERM: only the grace period's SIGKILL ends it.
STUBBORN = '''
import http.server, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass

print("stubborn serving", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
'''


def _with_stubborn(directory: Path) -> Callable[[Config], None]:
    script = directory / "stubborn.py"
    script.write_text(STUBBORN, encoding="utf-8")

    def edit(config: Config) -> None:
        port = spare_port(config)
        stubborn = command_service([sys.executable, str(script), str(port)])
        stubborn.port, stubborn.health_path = port, "/health"
        config.services["stubborn"] = stubborn

    return edit


def test_a_command_of_ones_own_dies_with_a_killed_supervisor(tooloo: Callable[..., Tooloo], tmp_path: Path) -> None:
    t = tooloo(_with_stubborn(tmp_path))
    assert t("up", "stubborn", "training").returncode == 0
    document = t.status()
    pids = [document["services"][name]["pid"] for name in ("stubborn", "training")]
    os.kill(document["supervisor"]["pid"], signal.SIGKILL)
    assert wait_gone(pids) == []  # the command by its preexec hook, the service by arming it itself


def test_a_service_whose_supervisor_is_gone_exits_before_serving(tmp_path: Path) -> None:
    port = free_port()
    environment = os.environ | {"TOOLOO_SUPERVISOR_PID": str(os.getpid() + 1_000_000)}  # not its parent
    started = subprocess.run([sys.executable, "-m", "tooloo_cli.services", "--port", str(port), "training"],
                             capture_output=True, text=True, timeout=30, env=environment, cwd=tmp_path)
    assert started.returncode == 1
    assert is_free("127.0.0.1", port)


def test_states_are_held_for_a_change_while_the_supervisor_waits_out_a_grace_period(
        tooloo: Callable[..., Tooloo], tmp_path: Path) -> None:
    """`up` waiting on /states must not spin while the supervisor stops (once it was answered at once)."""
    from tooloo_cli.supervisor.control import ControlClient

    t = tooloo(_with_stubborn(tmp_path))
    assert t("up", "stubborn").returncode == 0
    supervisor = t.status()["supervisor"]["pid"]
    client = ControlClient(t.state / "supervisor.sock")
    os.kill(supervisor, signal.SIGTERM)  # the stubborn one ignores its SIGTERM: 3 s of grace
    deadline = time.monotonic() + 5
    while (states := client.call("GET", "/states"))["services"]["stubborn"]["state"] != "stopping":
        assert time.monotonic() < deadline, states
        time.sleep(0.02)
    asked = time.monotonic()
    held = client.call("GET", f"/states?after={states['version']}&wait=1", timeout=5)
    assert time.monotonic() - asked >= 0.9, held  # nothing changed meanwhile: held for the whole wait
    assert held["services"]["stubborn"]["state"] == "stopping"
    assert wait_gone([supervisor], timeout=10) == []
