"""What `tooloo export k8s` and `tooloo export compose` share (tooloo_cli/export/containers.py): the same
services as `up` starts, the containers' tooloo.toml, the image's probe, names and image references.

The exports run as the real command (`tooloo export … --out DIR`, a subprocess in tmp_path with
--config and no TOOLOO_* variable) and are read back with a YAML parser, not with tooloo's own
writer. The validators of each format are run by test_export_k8s.py and test_export_compose.py.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml
from conftest import unavailable
from test_export import tooloo

from tooloo_cli.bench.stack import end_process, free_port
from tooloo_cli.config import load_config
from tooloo_cli.errors import UsageError
from tooloo_cli.export import Declaration, exporter
from tooloo_cli.export.containers import CONFIG_PATH, PROBE_SCRIPT, PROBE_TIMEOUT_SECONDS, check_image
from tooloo_cli.stack import ServiceSpec, stack_of
from tooloo_cli.stack.probes import PROBE_TIMEOUT

# Replicas (budget: two, beside its state; coach: two, leading over Redis), dependencies, a command
# service on a port probed over HTTP, one on no port with replicas and a name that is no host name
# as it is, and redis_url pointing at a declared redis-server. Nothing is started: these only render.
STACKED = """\
[stack]
redis_url = "redis://127.0.0.1:6390/0"

[services.web]
depends_on = ["budget"]

[services.budget]
port = 4110
replicas = 2
depends_on = ["redis"]
env_file = "budget.env"
env = { GREETING = "costs $5, or $(HOME)" }

[services.coach]
replicas = 2

[services.redis]
command = ["/usr/bin/redis-server", "--port", "6390", "--save", ""]
port = 6390

[services.worker]
command = ["python3", "-m", "http.server", "4200"]
port = 4200
health_path = "/"
depends_on = ["web"]

[services.log_shipper]
command = ["sleep", "infinity"]
replicas = 2
depends_on = ["worker"]
restart = "on-failure"
"""
# The stack's Redis in its container: its own options but those of the host (port, bind, dir), and open to the
# other containers.
REDIS_IN_A_CONTAINER = ["redis-server", "--save", "", "--port", "6390", "--bind", "0.0.0.0", "--dir", "/data",
                        "--protected-mode", "no"]
# Set in budget's env_file and in the exporting shell: neither may appear in any export.
API_KEY = "sk-test-d0-not-print-me"
SHELL_API_KEY = "sk-shell-never-written"


# Any attempt to reach the network fails at once: a validator that passes here passed offline.
OFFLINE = {"PATH": "/usr/bin:/bin", "NO_PROXY": "", "no_proxy": ""} | {
    variable: "http://127.0.0.1:9" for variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}


def installed(validator: str) -> str:
    """The validator the test extra installs beside this interpreter (skipped, or failed under CI, without it)."""
    found = Path(sys.executable).with_name(validator)
    if not found.is_file():
        unavailable(f"{found} is missing: pip install -e '.[test]' installs {validator}")
    return str(found)


def offline(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`argv` run with no network to reach."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=OFFLINE)


def stacked(tmp_path: Path, text: str = STACKED) -> Path:
    (tmp_path / "budget.env").write_text(f"# the provider's key, and one plain variable\nOPENAI_API_KEY={API_KEY}\n"
                                         "PLAIN=yes\n", encoding="utf-8")
    path = tmp_path / "tooloo.toml"
    path.write_text(text, encoding="utf-8")
    return path


def export(tmp_path: Path, config: Path, format_name: str, *options: str) -> Path:
    """`tooloo export FORMAT --out DIR` of `config`, with the API key in the shell; the directory."""
    result = tooloo(tmp_path, "--config", str(config), "export", format_name, "--out", format_name, *options,
                    env={"OPENAI_API_KEY": SHELL_API_KEY})
    assert result.returncode == 0, result.stderr
    return tmp_path / format_name


def manifests(directory: Path) -> list[dict[str, Any]]:
    """Every Kubernetes object of an export, as kubectl reads a directory (its .yaml files)."""
    return [document for path in sorted(directory.glob("*.yaml"))
            for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document is not None]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {item["metadata"]["name"]: item for item in objects if item["kind"] == kind}


def unescaped(parts: list[str]) -> list[str]:
    """What a container gets of a command or value both orchestrators expand (`$$` is one `$`)."""
    return [part.replace("$$", "$") for part in parts]


# -- the same services as `up` --------------------------------------------------------------------


def _probe(probe: Any) -> tuple[str, str | None]:
    return probe.kind, probe.path


def up_view(spec: ServiceSpec, config: Path) -> dict[str, Any]:
    """What the supervisor runs of `spec`, but for the interpreter and the configuration's path."""
    argv = list(spec.argv(spec.replicas[0]))
    if spec.builtin:
        assert argv[0] == sys.executable and argv[argv.index("--config") + 1] == str(config)
        argv[0], argv[argv.index("--config") + 1] = "python", CONFIG_PATH
    else:
        argv[0] = PurePosixPath(argv[0]).name  # the program, found on the image's PATH
    return {"argv": argv, "port": spec.port, "replicas": len(spec.replicas), "liveness": _probe(spec.liveness),
            "readiness": _probe(spec.readiness), "depends_on": sorted(spec.depends_on)}


def _k8s_probe(container: dict[str, Any], which: str) -> tuple[str, str | None]:
    probe = container.get(which)
    if probe is None:
        return "process", None
    return ("http", probe["httpGet"]["path"]) if "httpGet" in probe else ("tcp", None)


def k8s_view(deployment: dict[str, Any]) -> dict[str, Any]:
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port = container["ports"][0]["containerPort"] if "ports" in container else None
    assert _k8s_probe(container, "startupProbe") == _k8s_probe(container, "livenessProbe")
    return {"argv": unescaped(container["args"]), "port": port, "replicas": deployment["spec"]["replicas"],
            "liveness": _k8s_probe(container, "livenessProbe"), "readiness": _k8s_probe(container, "readinessProbe"),
            # Each init container waits for one dependency, named by its host in its probe's arguments.
            "depends_on": sorted(wait["args"][1] for wait in pod.get("initContainers", []))}


def compose_view(service: dict[str, Any]) -> dict[str, Any]:
    check = service.get("healthcheck")
    if check is None:
        readiness: tuple[str, str | None] = ("process", None)
    elif check["test"][1] == "redis-cli":  # the Redis image's own client: a PING over the TCP connection
        readiness = ("tcp", None)
    else:
        path = check["test"][4]
        readiness = ("http", path) if path else ("tcp", None)
    port, published = None, []
    if "ports" in service:
        (ports,) = service["ports"]
        assert ports["host_ip"] == "127.0.0.1"
        first, _, last = ports["published"].partition("-")
        port, published = ports["target"], list(range(int(first), int(last or first) + 1))
    return {"argv": unescaped(service["command"]), "port": port,
            "replicas": service.get("deploy", {}).get("replicas", 1), "published": published,
            "readiness": readiness, "depends_on": sorted(service.get("depends_on", {}))}


def test_up_and_both_exports_run_the_same_services_commands_ports_probes_and_dependencies(tmp_path: Path) -> None:
    config = stacked(tmp_path)
    stack = stack_of(load_config(config, env={}))
    host = {name: name.replace("_", "-") for name in stack.specs}
    expected = {host[name]: up_view(spec, config) | {"depends_on": sorted(host[d] for d in spec.depends_on)}
                for name, spec in stack.specs.items()}
    assert expected["redis"]["argv"] == ["redis-server", "--port", "6390", "--save", ""]
    assert expected["budget"]["replicas"] == 2 and expected["log-shipper"]["port"] is None

    # The stack's Redis keeps its own options but those of the host, and takes the other containers' connections.
    expected["redis"]["argv"] = REDIS_IN_A_CONTAINER
    deployments = of_kind(manifests(export(tmp_path, config, "k8s")), "Deployment")
    assert {name: k8s_view(deployment) for name, deployment in deployments.items()} == expected
    services = yaml.safe_load((export(tmp_path, config, "compose") / "compose.yaml").read_text(encoding="utf-8"))
    # Compose has one healthcheck, the readiness probe that depends_on waits for; the replicas are
    # published on the ports `up` gives them.
    published = {host[name]: [replica.port for replica in spec.replicas if replica.port is not None]
                 for name, spec in stack.specs.items()}
    assert {name: compose_view(service) for name, service in services["services"].items()} \
        == {name: {key: value for key, value in view.items() if key != "liveness"} | {"published": published[name]}
            for name, view in expected.items()}
    assert list(services["services"]) == [host[name] for name in stack.start_order()]


# -- the containers' tooloo.toml ------------------------------------------------------------------


def test_the_containers_configuration_binds_everywhere_names_siblings_and_keeps_state_in_the_volume(
        tmp_path: Path) -> None:
    config = stacked(tmp_path)
    k8s = of_kind(manifests(export(tmp_path, config, "k8s")), "ConfigMap")["tooloo-config"]["data"]["tooloo.toml"]
    compose = (export(tmp_path, config, "compose") / "containers.toml").read_text(encoding="utf-8")
    assert k8s == compose  # one configuration, whatever runs the containers
    written = tmp_path / "containers.toml"
    written.write_text(compose, encoding="utf-8")
    loaded = load_config(written, env={})  # the loader's checks, as a container's service runs them
    stack = stack_of(loaded)
    assert loaded.config.stack.redis_url == "redis://redis:6390/0" and loaded.config.stack.host == "0.0.0.0"
    assert loaded.state_path() == Path("/var/lib/tooloo")
    for name, spec in stack.specs.items():
        assert spec.bind == "0.0.0.0" and len(spec.replicas) == 1, name
        assert spec.url == (None if spec.port is None else f"http://{name.replace('_', '-')}:{spec.port}")
        assert spec.env == {} and spec.env_file is None
    assert {path.parent for spec in stack.specs.values() for path in spec.state_files} == {Path("/var/lib/tooloo")}
    data = tomllib.loads(compose)
    assert data["services"]["budget"]["port"] == 4110 and data["services"]["coach"]["tracer"]["sampling_rate"] == 0.1
    assert API_KEY not in compose and SHELL_API_KEY not in compose and "costs $5" not in compose


def test_a_redis_url_with_a_password_reaches_the_services_only_from_a_secret(tmp_path: Path) -> None:
    protected = STACKED.replace("redis://127.0.0.1:6390/0", "redis://:hunter2@localhost:6390/0")
    protected = protected.replace('"--save", ""', '"--save", "", "--requirepass", "hunter2", "--bind", "127.0.0.1"')
    assert "--requirepass" in protected
    config = stacked(tmp_path, protected)
    declaration = Declaration.of(load_config(config, env={}))
    k8s = exporter("k8s").render(declaration)
    compose = exporter("compose").render(declaration)
    assert not [file.name for file in k8s + compose if "hunter2" in file.content]
    toml = tomllib.loads(next(file for file in compose if file.name == "containers.toml").content)
    assert toml["stack"]["redis_url"] == "redis://:***@redis:6390/0"  # localhost is where redis is declared
    deployments = of_kind([doc for file in k8s if file.name.endswith(".yaml")
                           for doc in yaml.safe_load_all(file.content)], "Deployment")
    for name, deployment in deployments.items():
        env = deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])
        references = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in env if "valueFrom" in item}
        if name in ("redis", "worker", "log-shipper"):  # not tooloo's own: they read no configuration
            assert "TOOLOO_STACK__REDIS_URL" not in references
        else:
            assert references["TOOLOO_STACK__REDIS_URL"] == {"name": "tooloo-secrets",
                                                             "key": "TOOLOO_STACK__REDIS_URL", "optional": True}
    # The Redis takes its password from a secret too: $(NAME) is the value of a variable of the container's own.
    redis = deployments["redis"]["spec"]["template"]["spec"]["containers"][0]
    assert redis["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"] and "127.0.0.1" not in redis["args"]
    assert {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {
        "name": "tooloo-secrets", "key": "REDIS_PASSWORD", "optional": True}}} in redis["env"]
    services = yaml.safe_load(next(file for file in compose if file.name == "compose.yaml").content)["services"]
    assert "TOOLOO_STACK__REDIS_URL" in services["web"]["environment"]  # by name: from the shell
    assert services["redis"]["command"][-2:] == ["--requirepass", "${REDIS_PASSWORD}"]
    assert toml["services"]["redis"]["command"][-2:] == ["--requirepass", "***"]


@pytest.mark.parametrize(("file", "said"), [
    ("/srv/reports-cache.db", "services.reports: /srv/reports-cache.db is an absolute path"),
    ("{state}/reports-cache.db", "services.reports: {state}/reports-cache.db is an absolute path"),  # even in it
    ("../reports-cache.db", "services.reports: '../reports-cache.db' climbs out of [stack] state_dir"),
])
def test_a_state_file_outside_the_state_directory_is_refused_for_containers(tmp_path: Path, file: str,
                                                                             said: str) -> None:
    """Only the state directory is a volume in a container, mounted where the container's tooloo.toml says:
    a cache named by a path of the host's, or beside state_dir, would be unwritable there, and the service
    would never be ready."""
    state = tmp_path / ".tooloo"
    config = stacked(tmp_path, STACKED + f'\n[services.reports.cache]\nfile = "{file.format(state=state)}"\n')
    for format_name in ("k8s", "compose"):
        result = tooloo(tmp_path, "--config", str(config), "export", format_name)
        assert result.returncode == 2, result.stdout + result.stderr
        assert said.format(state=state) in result.stderr
        assert "Traceback" not in result.stderr


def test_a_redis_elsewhere_keeps_its_url_and_runs_no_redis(tmp_path: Path) -> None:
    config = stacked(tmp_path, STACKED.replace("redis://127.0.0.1:6390/0", "redis://cache.example.com:6379/2"))
    declaration = Declaration.of(load_config(config, env={}))
    files = {file.name: file.content for file in exporter("compose").render(declaration)}
    assert tomllib.loads(files["containers.toml"])["stack"]["redis_url"] == "redis://cache.example.com:6379/2"
    # The declared redis-server is no longer the stack's Redis: a command of the user's, in tooloo's image.
    assert yaml.safe_load(files["compose.yaml"])["services"]["redis"]["image"] == "tooloo:latest"


# -- the image ------------------------------------------------------------------------------------


def _dockerfile_probe(tmp_path: Path) -> Path:
    """The probe as the Dockerfile installs it (its heredoc), to run here."""
    dockerfile = next(file.content for file in exporter("compose").render(
        Declaration.of(load_config(stacked(tmp_path), env={}))) if file.name == "Dockerfile")
    script = dockerfile.split('<<"PROBE" /usr/local/bin/tooloo-probe\n', 1)[1].split("\nPROBE\n", 1)[0] + "\n"
    assert script == PROBE_SCRIPT
    path = tmp_path / "tooloo-probe"
    path.write_text(script, encoding="utf-8")
    return path


def test_an_exported_container_command_serves_with_the_exported_configuration_and_passes_its_probes(
        tmp_path: Path) -> None:
    """The pod's command and ConfigMap, run here (the image's python and paths swapped for this machine's)."""
    port = free_port()
    config = tmp_path / "tooloo.toml"
    config.write_text(f"[services.training]\nport = {port}\n", encoding="utf-8")
    objects = manifests(export(tmp_path, config, "k8s"))
    toml = tmp_path / "containers.toml"
    toml.write_text(of_kind(objects, "ConfigMap")["tooloo-config"]["data"]["tooloo.toml"], encoding="utf-8")
    training = of_kind(objects, "Deployment")["training"]["spec"]["template"]["spec"]["containers"][0]
    argv = [{"python": sys.executable, CONFIG_PATH: str(toml)}.get(part, part) for part in unescaped(training["args"])]
    probe = _dockerfile_probe(tmp_path)

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(probe), *args], capture_output=True, text=True, timeout=30)

    env = {"TOOLOO_STACK__STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    service = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ready = subprocess.run([sys.executable, str(probe), "127.0.0.1", str(port), "/ready", "--wait"],
                               capture_output=True, text=True, timeout=30)
        assert ready.returncode == 0, ready.stderr
        for path in (training["livenessProbe"]["httpGet"]["path"], training["readinessProbe"]["httpGet"]["path"]):
            assert check("127.0.0.1", str(port), path).returncode == 0
        missing = check("127.0.0.1", str(port), "/no-such-path")
        assert missing.returncode == 1 and "GET /no-such-path answered 404" in missing.stderr
        assert check("127.0.0.1", str(port), "").returncode == 0  # a TCP connect
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/training/status").status_code == 200
    finally:
        end_process(service)
    assert service.returncode == 0, service.stderr.read().decode() if service.stderr else ""
    refused = check("127.0.0.1", str(port), "")
    assert refused.returncode == 1 and f"127.0.0.1:{port}:" in refused.stderr


def test_the_probes_wait_as_long_as_the_supervisors() -> None:
    assert PROBE_TIMEOUT_SECONDS == PROBE_TIMEOUT


@pytest.mark.parametrize("image", ["tooloo", "tooloo:latest", "registry.example.com:5000/team/tooloo:1.0-rc.1",
                                   "ghcr.io/a_b/c__d/e-f", f"tooloo@sha256:{'a' * 64}", f"x/y:2@sha256:{'0' * 64}"])
def test_image_references_docker_takes_are_taken(image: str) -> None:
    assert check_image(image) == image


@pytest.mark.parametrize("image", ["", "Tooloo", "tooloo:", "tooloo latest", "-tooloo", "tooloo:-1", "a//b",
                                   "tooloo@sha256:abc", "tooloo:" + "x" * 129, "x" * 256])
def test_anything_else_is_refused_naming_the_option(image: str) -> None:
    with pytest.raises(UsageError, match=r"--image .* is not an image reference"):
        check_image(image)


def test_names_that_are_no_host_names_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    for services, problem in (('[services.worker-]\ncommand = ["true"]\n', "'worker-' cannot be a host name"),
                              ('[services.a_b]\ncommand = ["true"]\n[services.a-b]\ncommand = ["true"]\n',
                               "services.a-b and services.a_b would both be 'a-b'")):
        config = tmp_path / "tooloo.toml"
        config.write_text(services, encoding="utf-8")
        for format_name in ("k8s", "compose"):
            result = tooloo(tmp_path, "--config", str(config), "export", format_name, "--out", "out")
            assert result.returncode == 2 and problem in result.stderr, result.stderr
            assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
