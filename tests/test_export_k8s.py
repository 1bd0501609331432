"""`tooloo export k8s`, checked with the real validator: `kubernetes-validate --strict` (the API's own
OpenAPI schemas, shipped in the package), run offline, on every manifest of each export at once.

The command runs as a real subprocess in tmp_path with --config and no TOOLOO_* variable; its
files are read back with a YAML parser. What the pods run is compared with what `up` runs in
test_export_containers.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_export import SHIPPED, _one_clear_line, tooloo
from test_export_containers import (
    API_KEY,
    REDIS_IN_A_CONTAINER,
    SHELL_API_KEY,
    export,
    installed,
    manifests,
    of_kind,
    offline,
    stacked,
)

from tooloo_cli.config import BUILTIN_SERVICES, load_config
from tooloo_cli.export import Declaration, exporter

# One mistake per object (the validator reports an object's first): a wrong type, a missing field,
# a field Kubernetes does not have.
BROKEN = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: wrong-type}
spec: {replicas: "two", selector: {matchLabels: {app: a}}, template: {spec: {containers: [{name: a}]}}}
---
apiVersion: v1
kind: Service
metadata: {name: missing-field}
spec: {ports: [{name: http}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unknown-field}
data: {a: b}
restart: always
"""


@pytest.fixture
def kubernetes_validate() -> str:
    return installed("kubernetes-validate")


def validate(validator: str, paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return offline([validator, "--strict", *map(str, paths)])


def check(validator: str, paths: list[Path]) -> None:
    result = validate(validator, paths)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def test_the_validator_runs_offline_and_fails_a_broken_manifest(tmp_path: Path, kubernetes_validate: str) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN, encoding="utf-8")
    result = validate(kubernetes_validate, [broken])
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for problem in ("deployment/wrong-type", "'two' is not of type 'integer'", "service/missing-field",
                    "'port' is a required property", "configmap/unknown-field", "'restart' was unexpected"):
        assert problem in output, output


def test_the_shipped_stack_exports_manifests_kubectl_applies_as_a_directory_and_as_a_stream(
        tmp_path: Path, kubernetes_validate: str) -> None:
    out = export(tmp_path, SHIPPED, "k8s")
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["00-config.yaml", *(f"{name}.yaml" for name in BUILTIN_SERVICES), "Dockerfile", "Dockerfile.dockerignore"])
    printed = tooloo(tmp_path, "--config", str(SHIPPED), "export", "k8s")
    assert printed.returncode == 0 and printed.stderr == "", printed.stderr
    stream = tmp_path / "stream.yaml"
    stream.write_text(printed.stdout, encoding="utf-8")
    check(kubernetes_validate, [*sorted(out.glob("*.yaml")), stream])

    objects = manifests(out)

    def key(item: dict[str, Any]) -> tuple[str, str]:
        return item["kind"], item["metadata"]["name"]

    streamed = [item for item in yaml.safe_load_all(printed.stdout) if item is not None]
    assert sorted(streamed, key=key) == sorted(objects, key=key)  # stdout: the same objects
    assert "# FROM python:3.12-slim" in printed.stdout  # the Dockerfile, as comments after the manifests
    assert {item["metadata"]["namespace"] for item in objects} == {"default"}
    assert sorted(of_kind(objects, "Deployment")) == sorted(of_kind(objects, "Service")) == sorted(BUILTIN_SERVICES)
    claims = of_kind(objects, "PersistentVolumeClaim")
    assert sorted(claims) == ["budget-state", "capabilities-state", "reports-state"]
    loaded = load_config(SHIPPED, env={})
    for name, deployment in of_kind(objects, "Deployment").items():
        port = loaded.services[name].port
        pod = deployment["spec"]["template"]
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
        assert pod["spec"]["terminationGracePeriodSeconds"] == 5 and pod["spec"]["enableServiceLinks"] is False
        main = container(deployment)
        assert main["image"] == "tooloo:latest" and main["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
        assert main["livenessProbe"]["httpGet"] == {"path": "/health", "port": port}
        assert main["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port}
        # Up to the startup timeout (15 s) to be alive, then the supervisor's interval and patience.
        assert (main["startupProbe"]["periodSeconds"], main["startupProbe"]["failureThreshold"]) == (1, 15)
        assert (main["livenessProbe"]["periodSeconds"], main["livenessProbe"]["failureThreshold"]) == (2, 3)
        assert {"name": "config", "mountPath": "/etc/tooloo", "readOnly": True} in main["volumeMounts"]
        has_state = f"{name}-state" in claims
        assert ({"name": "state", "mountPath": "/var/lib/tooloo"} in main["volumeMounts"]) == has_state
        assert ("affinity" in pod["spec"]) == has_state
        service = of_kind(objects, "Service")[name]
        assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": port}]
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"] \
            == pod["metadata"]["labels"]
    # One process only: replaced, never rolled, never scaled; coach too while there is no Redis.
    for name in ("training", "coach", "capabilities"):
        deployment = of_kind(objects, "Deployment")[name]
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
        assert f"{name} runs as one process only" in (out / f"{name}.yaml").read_text(encoding="utf-8")
    assert "strategy" not in of_kind(objects, "Deployment")["budget"]["spec"]


def test_replicas_dependencies_a_command_service_and_a_declared_redis(tmp_path: Path,
                                                                       kubernetes_validate: str) -> None:
    out = export(tmp_path, stacked(tmp_path), "k8s", "--namespace", "tooloo-staging", "--image",
                 "registry.example.com/tooloo:1.0")
    check(kubernetes_validate, sorted(out.glob("*.yaml")))
    objects = manifests(out)
    assert {item["metadata"]["namespace"] for item in objects} == {"tooloo-staging"}
    deployments, services = of_kind(objects, "Deployment"), of_kind(objects, "Service")
    assert "log-shipper" in deployments and "log-shipper" not in services  # no port, no Service

    budget = deployments["budget"]
    assert budget["spec"]["replicas"] == 2 and "strategy" not in budget["spec"]
    # Both replicas share the ledger on one node, as `up`'s share the state directory.
    (term,) = budget["spec"]["template"]["spec"]["affinity"]["podAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == budget["spec"]["selector"]["matchLabels"]
    (wait,) = budget["spec"]["template"]["spec"]["initContainers"]
    assert wait["name"] == "wait-for-redis" and wait["args"] == ["tooloo-probe", "redis", "6390", "", "--wait"]
    assert wait["image"] == "registry.example.com/tooloo:1.0"
    coach = deployments["coach"]  # given Redis, one leads and the other stands by: it may roll
    assert coach["spec"]["replicas"] == 2 and "strategy" not in coach["spec"]

    redis = deployments["redis"]
    assert container(redis)["image"] == "redis:7"
    # Its own options but those of the host (bind, dir, port), and it takes connections from the other pods.
    assert container(redis)["args"] == REDIS_IN_A_CONTAINER
    assert container(redis)["readinessProbe"]["tcpSocket"] == {"port": 6390}
    assert "securityContext" not in redis["spec"]["template"]["spec"]  # the image drops to its own user
    assert "prometheus.io/scrape" not in redis["spec"]["template"]["metadata"].get("annotations", {})
    assert services["redis"]["spec"]["ports"] == [{"name": "tcp", "port": 6390, "targetPort": 6390}]
    config = yaml.safe_load((out / "00-config.yaml").read_text(encoding="utf-8"))["data"]["tooloo.toml"]
    assert 'redis_url = "redis://redis:6390/0"' in config

    worker = container(deployments["worker"])
    assert worker["image"] == "registry.example.com/tooloo:1.0" and worker["args"][0] == "python3"
    assert worker["livenessProbe"]["httpGet"] == {"path": "/", "port": 4200}
    assert "volumeMounts" not in worker  # a command of the user's reads no tooloo.toml
    shipper = container(deployments["log-shipper"])
    assert deployments["log-shipper"]["spec"]["replicas"] == 2
    assert not {"livenessProbe", "readinessProbe", "startupProbe", "ports"} & set(shipper)
    assert "restart = 'on-failure' in the configuration" in (out / "log-shipper.yaml").read_text(encoding="utf-8")


def test_secrets_are_references_never_values(tmp_path: Path, kubernetes_validate: str) -> None:
    out = export(tmp_path, stacked(tmp_path), "k8s")
    printed = tooloo(tmp_path, "--config", str(tmp_path / "tooloo.toml"), "export", "k8s",
                     env={"OPENAI_API_KEY": SHELL_API_KEY})
    texts = [printed.stdout, *(path.read_text(encoding="utf-8") for path in out.iterdir())]
    assert not [text for text in texts if API_KEY in text or SHELL_API_KEY in text]
    env = container(of_kind(manifests(out), "Deployment")["budget"])["env"]
    assert {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": "tooloo-secrets", "key": "OPENAI_API_KEY", "optional": True}}} in env
    # Its env_file's variables from the Secret too (the file is never copied); its env table's as written,
    # `$` kept from Kubernetes' expansion.
    assert {"name": "PLAIN", "valueFrom": {"secretKeyRef": {"name": "tooloo-secrets", "key": "PLAIN",
                                                              "optional": True}}} in env
    assert {"name": "GREETING", "value": "costs $$5, or $$(HOME)"} in env
    assert [item["name"] for item in env].count("OPENAI_API_KEY") == 1
    for name, deployment in of_kind(manifests(out), "Deployment").items():
        if name != "budget":  # the key is budget's alone
            assert "OPENAI_API_KEY" not in str(container(deployment).get("env"))
    assert "kubectl create secret generic tooloo-secrets -n default --from-literal=OPENAI_API_KEY=…" in \
        (out / "00-config.yaml").read_text(encoding="utf-8")


def test_the_same_configuration_gives_the_same_bytes_and_an_export_is_replaced_only_with_force(
        tmp_path: Path) -> None:
    config = stacked(tmp_path)
    rendered = exporter("k8s").render(Declaration.of(load_config(config, env={})))
    assert rendered == exporter("k8s").render(Declaration.of(load_config(config, env={})))
    out = export(tmp_path, config, "k8s")
    (out / "budget.yaml").write_text("# mine\n", encoding="utf-8")
    refused = tooloo(tmp_path, "--config", str(config), "export", "k8s", "--out", "k8s")
    _one_clear_line(refused, 2, "k8s/00-config.yaml already exists; add --force to overwrite it")
    assert (out / "budget.yaml").read_text(encoding="utf-8") == "# mine\n"
    forced = tooloo(tmp_path, "--config", str(config), "export", "k8s", "--out", "k8s", "--force")
    assert forced.returncode == 0, forced.stderr
    assert {path.name: path.read_text(encoding="utf-8") for path in out.iterdir()} \
        == {file.name: file.content for file in rendered}


@pytest.mark.parametrize(("option", "value", "problem"), [
    ("--image", "Tooloo:Latest", "--image 'Tooloo:Latest' is not an image reference"),
    ("--image", "tooloo latest", "--image 'tooloo latest' is not an image reference"),
    ("--namespace", "Tooloo_NS", "--namespace 'Tooloo_NS' is not a Kubernetes namespace name"),
    ("--namespace", "-tooloo", "--namespace '-tooloo' is not a Kubernetes namespace name"),
])
def test_a_bad_image_or_namespace_is_refused_naming_it(tmp_path: Path, option: str, value: str, problem: str) -> None:
    result = tooloo(tmp_path, "--config", str(SHIPPED), "export", "k8s", "--out", "deploy", f"{option}={value}")
    _one_clear_line(result, 2, problem)
    assert result.stdout == "" and not (tmp_path / "deploy").exists()
