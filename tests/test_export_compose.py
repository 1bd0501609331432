"""`tooloo export compose`, checked with the real validator: check-jsonschema against the compose
specification's own schema (`--builtin-schema vendor.compose-spec`, shipped in the package), offline.

The command runs as a real subprocess in tmp_path with --config and no TOOLOO_* variable; its
files are read back with a YAML parser. What the containers run is compared with what `up` runs
in test_export_containers.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_export import SHIPPED, SHIPPED_PORTS, _one_clear_line, tooloo
from test_export_containers import API_KEY, REDIS_IN_A_CONTAINER, SHELL_API_KEY, export, installed, offline, stacked

from tooloo_cli.config import BUILTIN_SERVICES, load_config
from tooloo_cli.export import render

# One mistake per service: a field compose does not have, a wrong type, a condition that is none.
BROKEN = """\
services:
  unknown-field:
    image: tooloo:latest
    restart_policy: always
  wrong-type:
    image: tooloo:latest
    ports: {web: 3000}
  no-such-condition:
    image: tooloo:latest
    depends_on: {wrong-type: {condition: service_ready}}
"""


@pytest.fixture
def check_jsonschema() -> str:
    return installed("check-jsonschema")


def validate(validator: str, paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return offline([validator, "--builtin-schema", "vendor.compose-spec", *map(str, paths)])


def check(validator: str, paths: list[Path]) -> None:
    result = validate(validator, paths)
    assert result.returncode == 0 and "validation done" in result.stdout, result.stdout + result.stderr


def compose_file(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "compose.yaml").read_text(encoding="utf-8"))


def test_the_validator_runs_offline_and_fails_a_broken_file(tmp_path: Path, check_jsonschema: str) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(BROKEN, encoding="utf-8")
    result = validate(check_jsonschema, [broken])
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    for problem in ("'restart_policy' was unexpected", "$.services['wrong-type'].ports",
                    "'service_ready' is not one of"):
        assert problem in output, output


def test_the_shipped_stack_exports_a_valid_compose_file(tmp_path: Path, check_jsonschema: str) -> None:
    out = export(tmp_path, SHIPPED, "compose")
    assert sorted(path.name for path in out.iterdir()) == ["Dockerfile", "Dockerfile.dockerignore", "compose.yaml",
                                                            "containers.toml"]
    check(check_jsonschema, [out / "compose.yaml"])
    compose = compose_file(out)
    assert compose["name"] == "tooloo" and compose["configs"] == {"tooloo": {"file": "./containers.toml"}}
    assert list(compose["services"]) == list(BUILTIN_SERVICES)
    assert compose["volumes"] == {"budget-state": {}, "reports-state": {}, "capabilities-state": {}}
    for name, service in compose["services"].items():
        port = SHIPPED_PORTS[name]
        assert service["image"] == "tooloo:latest" and service["restart"] == "always"
        assert service["ports"] == [{"target": port, "host_ip": "127.0.0.1", "published": str(port), "protocol": "tcp"}]
        assert service["healthcheck"] == {"test": ["CMD", "tooloo-probe", "127.0.0.1", str(port), "/ready"],
                                          "interval": "2s", "timeout": "1s", "retries": 1, "start_period": "15s",
                                          "start_interval": "1s"}
        assert service["stop_grace_period"] == "5s"
        assert service["configs"] == [{"source": "tooloo", "target": "/etc/tooloo/tooloo.toml"}]
        assert ("volumes" in service) == (f"{name}-state" in compose["volumes"])
        assert "depends_on" not in service and "deploy" not in service
    assert compose["services"]["budget"]["volumes"] == [{"type": "volume", "source": "budget-state",
                                                         "target": "/var/lib/tooloo"}]


def test_replicas_dependencies_a_command_service_and_a_declared_redis(tmp_path: Path, check_jsonschema: str) -> None:
    out = export(tmp_path, stacked(tmp_path), "compose", "--image", "registry.example.com/tooloo:1.0")
    check(check_jsonschema, [out / "compose.yaml"])
    services = compose_file(out)["services"]
    budget = services["budget"]
    assert budget["deploy"] == {"replicas": 2}
    # Each replica on the port `up` gives it, on loopback only; one port inside each container.
    assert budget["ports"] == [{"target": 4110, "host_ip": "127.0.0.1", "published": "4110-4111", "protocol": "tcp"}]
    assert budget["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert services["web"]["depends_on"] == {"budget": {"condition": "service_healthy"}}
    assert services["log-shipper"]["depends_on"] == {"worker": {"condition": "service_healthy"}}
    redis = services["redis"]
    assert redis["image"] == "redis:7" and redis["command"] == REDIS_IN_A_CONTAINER
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "-p", "6390", "ping"]
    assert "configs" not in redis and "volumes" not in redis
    worker = services["worker"]
    assert worker["image"] == "registry.example.com/tooloo:1.0"
    assert worker["healthcheck"]["test"] == ["CMD", "tooloo-probe", "127.0.0.1", "4200", "/"]
    shipper = services["log-shipper"]
    assert shipper["restart"] == "on-failure" and shipper["deploy"] == {"replicas": 2}
    assert not {"ports", "healthcheck"} & set(shipper)
    assert 'redis_url = "redis://redis:6390/0"' in (out / "containers.toml").read_text(encoding="utf-8")


def test_a_dependency_without_a_port_is_waited_for_only_to_start(tmp_path: Path, check_jsonschema: str) -> None:
    config = tmp_path / "tooloo.toml"
    config.write_text('[services.ticker]\ncommand = ["sleep", "infinity"]\n\n[services.web]\ndepends_on = ["ticker"]\n',
                      encoding="utf-8")
    out = export(tmp_path, config, "compose")
    check(check_jsonschema, [out / "compose.yaml"])
    services = compose_file(out)["services"]
    assert services["web"]["depends_on"] == {"ticker": {"condition": "service_started"}}
    assert list(services)[0] == "ticker"  # dependencies first, as `up` starts them


def test_secrets_are_passed_on_by_name_never_written(tmp_path: Path) -> None:
    out = export(tmp_path, stacked(tmp_path), "compose")
    printed = tooloo(tmp_path, "--config", str(tmp_path / "tooloo.toml"), "export", "compose",
                     env={"OPENAI_API_KEY": SHELL_API_KEY})
    texts = [printed.stdout, *(path.read_text(encoding="utf-8") for path in out.iterdir())]
    assert not [text for text in texts if API_KEY in text or SHELL_API_KEY in text]
    services = compose_file(out)["services"]
    # The env_file is read by compose where it runs, never copied; the env table as written (`$` kept from
    # interpolation); a secret not in the file, a bare name: compose passes the shell's value on.
    assert services["budget"]["env_file"] == [str(tmp_path / "budget.env")]
    assert services["budget"]["environment"] == ["GREETING=costs $$5, or $$(HOME)"]
    assert all("environment" not in service for name, service in services.items() if name != "budget")


def test_without_out_it_prints_every_file_and_with_out_it_refuses_to_overwrite(tmp_path: Path) -> None:
    expected = render("compose", load_config(SHIPPED, env={}))
    printed = tooloo(tmp_path, "--config", str(SHIPPED), "export", "compose")
    assert printed.returncode == 0 and printed.stdout == expected and printed.stderr == ""
    assert [line for line in expected.splitlines() if line.startswith("# ==> ")] == [
        "# ==> compose.yaml <==", "# ==> containers.toml <==", "# ==> Dockerfile <==",
        "# ==> Dockerfile.dockerignore <=="]
    out = export(tmp_path, SHIPPED, "compose")
    before = {path.name: path.read_text(encoding="utf-8") for path in out.iterdir()}
    refused = tooloo(tmp_path, "--config", str(SHIPPED), "export", "compose", "--out", "compose")
    _one_clear_line(refused, 2, "compose/compose.yaml already exists; add --force to overwrite it")
    forced = tooloo(tmp_path, "--config", str(SHIPPED), "export", "compose", "--out", "compose", "--force")
    assert forced.returncode == 0, forced.stderr
    assert {path.name: path.read_text(encoding="utf-8") for path in out.iterdir()} == before  # the same bytes


def test_a_bad_image_is_refused_and_a_namespace_is_not_a_compose_option(tmp_path: Path) -> None:
    _one_clear_line(tooloo(tmp_path, "--config", str(SHIPPED), "export", "compose", "--image", "Tooloo"), 2,
                    "--image 'Tooloo' is not an image reference")
    _one_clear_line(tooloo(tmp_path, "--config", str(SHIPPED), "export", "compose", "--namespace", "tooloo"), 2,
                    "the compose format has no option namespace; its options: image")
    assert not list(tmp_path.iterdir())
