"""`tooloo export k8s`: the stack as Kubernetes objects, one file per service, for `kubectl apply -f DIR`.

    tooloo export k8s --out deploy/ && docker build -f deploy/Dockerfile -t tooloo:latest . \\
        && kubectl apply -f deploy/
    tooloo export k8s --namespace tooloo --image registry.example.com/tooloo:1.0 | kubectl apply -f -
    KubernetesExporter(image="tooloo:1.0").render(Declaration.of(loaded))   # [File("00-config.yaml", …), …]

What it declares, all in `namespace` (`default`; it must exist), every object labelled
app.kubernetes.io/name (the service's host name: containers.py) and part-of=tooloo:

- 00-config.yaml: the ConfigMap tooloo-config holding the containers' tooloo.toml
  (containers.py: siblings reached at their Services, state under /var/lib/tooloo, no
  secret), mounted at /etc/tooloo by every pod of tooloo's own. First, as `kubectl apply`
  takes a directory's files in order of their names (no service name starts with a digit).
- NAME.yaml per service, dependencies first: a Deployment (its command, `replicas`,
  terminationGracePeriodSeconds from its grace period, startupProbe from its startup
  timeout and liveness probe, livenessProbe on /health, readinessProbe on its own /ready,
  each as often and as patient as the supervisor's; resource requests; its env table,
  and its secrets and its env_file's variables as references to the Secret
  tooloo-secrets, never values; an init
  container per `depends_on` that waits for the dependency's readiness through its
  Service, as `up` starts dependencies first; Prometheus's scrape annotations), a
  Service on its port, and a PersistentVolumeClaim when it has state files. A service
  that runs as one process only (its spec.single_process) keeps replicas 1 and is replaced, not
  rolled; the pods of a service with state run on the node its volume is on, sharing it
  as `up`'s replicas share the state directory. The Redis [stack] redis_url points at,
  when it is a declared service, runs in redis:7.
- Dockerfile and Dockerfile.dockerignore: the image (containers.py); kubectl reads only
  .yaml, .yml and .json files of a directory.

Without --out the manifests are printed as one YAML stream, which `kubectl apply -f -`
takes, the Dockerfile after them as comments. The Secret is not exported (it would hold
the values): `kubectl create secret generic tooloo-secrets --from-literal=OPENAI_API_KEY=…`.
Every reference to it is optional, as `up` starts a service without a secret that is not
set. A Deployment's pods are restarted whatever their exit (`restart` other than always
is said in a comment), and the replicas' ports are one port behind one Service.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from tooloo_cli.config.loader import redacted_url
from tooloo_cli.errors import UsageError
from tooloo_cli.export.base import Declaration, Exporter, File
from tooloo_cli.export.containers import (
    CONFIG_DIR,
    DEFAULT_IMAGE,
    PROBE_TIMEOUT_SECONDS,
    REDIS_URL_VARIABLE,
    STATE_DIR,
    USER_ID,
    Containers,
    check_command,
    check_image,
    image_files,
    literal,
)
from tooloo_cli.export.yaml_text import document
from tooloo_cli.stack import METRICS_PATH, Probe, ServiceSpec

DEFAULT_NAMESPACE = "default"
CONFIG_FILE = "00-config.yaml"
CONFIG_MAP = "tooloo-config"
SECRET = "tooloo-secrets"
# What a service asks of a node: the README's figures, ~35 MB of memory and little CPU at rest.
REQUESTS = {"cpu": "50m", "memory": "64Mi"}
STATE_SIZE = "1Gi"  # SQLite caches and ledgers: small, and a claim can grow
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a DNS-1123 label
_PART_OF = {"app.kubernetes.io/part-of": "tooloo"}


class KubernetesExporter(Exporter):
    """A ConfigMap, and per service a Deployment, a Service and a claim for its state; the Dockerfile."""

    def __init__(self, image: str = DEFAULT_IMAGE, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.image = check_image(image)
        if not _NAMESPACE.fullmatch(namespace):
            raise UsageError(f"--namespace {namespace!r} is not a Kubernetes namespace name: at most 63 lower-case "
                             "letters, digits and '-', starting and ending with a letter or digit (e.g. tooloo)")
        self.namespace = namespace

    def render(self, declaration: Declaration) -> list[File]:
        containers = Containers.of(declaration)
        header = f"Written by `tooloo export k8s` from {containers.origin()}: export again when it changes."
        config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self._metadata(CONFIG_MAP, _PART_OF),
                      "data": {"tooloo.toml": containers.config}}
        comments = [f"The tooloo.toml every pod of tooloo's own reads at {CONFIG_DIR}/tooloo.toml.", header]
        secrets = containers.secret_variables()
        if secrets:
            comments += [f"The pods take {', '.join(secrets)} from the Secret {SECRET}, which is not exported (it "
                         "would hold the values); make it with",
                         f"  kubectl create secret generic {SECRET} -n {self.namespace} "
                         + " ".join(f"--from-literal={key}=…" for key in secrets)]
        if REDIS_URL_VARIABLE in secrets:
            comments.append(f"{REDIS_URL_VARIABLE} is the whole Redis URL as the pods reach it: "
                            f"{redacted_url(containers.redis_url)}, with its password.")
        files = [File(CONFIG_FILE, _stream([(config_map, comments)]))]
        for name in declaration.stack.start_order():
            spec = declaration.stack.specs[name]
            files.append(File(f"{containers.host(name)}.yaml", _stream(self._objects(containers, spec, header))))
        return files + image_files()

    def to_stdout(self, files: Sequence[File]) -> str:
        """One YAML stream of the manifests (for `kubectl apply -f -`), the other files as comments after it."""
        manifests = [f"# ==> {file.name} <==\n{file.content}" for file in files if file.name.endswith(".yaml")]
        others = [f"# ==> {file.name} <==\n" + "".join(f"# {line}".rstrip() + "\n"
                                                         for line in file.content.splitlines())
                  for file in files if not file.name.endswith(".yaml")]
        return "---\n".join(manifests) + "".join(others)

    def _metadata(self, name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {"name": name, "namespace": self.namespace, "labels": labels}

    def _objects(self, containers: Containers, spec: ServiceSpec,
                 header: str) -> list[tuple[dict[str, Any], list[str]]]:
        host = containers.host(spec.name)
        labels = {"app.kubernetes.io/name": host, **_PART_OF}
        objects = [self._deployment(containers, spec, labels)]
        if spec.port is not None:
            port = {"name": _port_name(spec), "port": spec.port, "targetPort": spec.port}
            objects.append(({"apiVersion": "v1", "kind": "Service", "metadata": self._metadata(host, labels),
                             "spec": {"selector": labels, "ports": [port]}}, []))
        if spec.state_files:
            claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": STATE_SIZE}}}
            objects.append(({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "metadata": self._metadata(f"{host}-state", labels), "spec": claim},
                            [f"{spec.name}'s state: {', '.join(path.name for path in spec.state_files)}."]))
        first, comments = objects[0]
        objects[0] = (first, [f"The {spec.name} service of the tooloo stack. {header}", *comments])
        return objects

    def _deployment(self, containers: Containers, spec: ServiceSpec,
                    labels: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
        host = containers.host(spec.name)
        comments: list[str] = []
        environment = containers.environment(spec)
        env: list[dict[str, Any]] = [{"name": key, "value": literal(value)}
                                     for key, value in environment.plain.items()]
        env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key, "optional": True}}}
                for key in environment.secret]
        if environment.secret:
            comments.append(f"{', '.join(environment.secret)}: from the Secret {SECRET} ({CONFIG_FILE} says how to "
                            "make it).")
        container: dict[str, Any] = {"name": host, "image": containers.image(spec, self.image),
                                     "imagePullPolicy": "IfNotPresent",
                                     # $(NAME): the value of a variable of the container's own env (a secret's)
                                     "args": [literal(part) if isinstance(part, str) else f"$({part.name})"
                                              for part in containers.command(spec)]}
        if spec.port is not None:
            container["ports"] = [{"name": _port_name(spec), "containerPort": spec.port}]
            container.update(_probes(spec, spec.port))
        if env:
            container["env"] = env
        container["resources"] = {"requests": dict(REQUESTS)}
        mounts, volumes = [], []
        if spec.builtin:
            mounts.append({"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
            volumes.append({"name": "config", "configMap": {"name": CONFIG_MAP}})
        if spec.state_files:
            mounts.append({"name": "state", "mountPath": STATE_DIR})
            volumes.append({"name": "state", "persistentVolumeClaim": {"claimName": f"{host}-state"}})
        if mounts:
            container["volumeMounts"] = mounts

        # The pod's environment is what the spec says, as under `up`: no variables for every Service.
        pod: dict[str, Any] = {"enableServiceLinks": False,
                               "terminationGracePeriodSeconds": math.ceil(spec.grace_period)}
        if spec.name != containers.redis_service:
            # tooloo's image runs as its own user, the volume made its (fsGroup); redis:7 drops to its own itself.
            pod["securityContext"] = {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID,
                                      "fsGroup": USER_ID}
        if spec.state_files:
            # A ReadWriteOnce volume is on one node at a time: its service's pods go there, and share it.
            pod["affinity"] = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": labels}, "topologyKey": "kubernetes.io/hostname"}]}}
        waits = [self._wait_for(containers, containers.declaration.stack.specs[name]) for name in spec.depends_on]
        if any(waits):
            pod["initContainers"] = [wait for wait in waits if wait]
        pod["containers"] = [container]
        if volumes:
            pod["volumes"] = volumes

        template: dict[str, Any] = {"labels": labels}
        if spec.builtin:
            template["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": str(spec.port),
                                       "prometheus.io/path": METRICS_PATH,
                                       # A changed configuration rolls the pods, which read it only at start.
                                       "tooloo/config-sha256": containers.config_digest}
        deployment: dict[str, Any] = {"replicas": len(spec.replicas)}
        reason = spec.single_process
        if reason is not None:
            deployment["strategy"] = {"type": "Recreate"}
            comments.append(f"replicas: 1, replaced rather than rolled: {spec.name} runs as one process only "
                            f"({reason}); do not scale it.")
        if containers.redis_service == spec.name:
            comments.append("[stack] redis_url points at this service: the stack's Redis, in the redis image.")
        if spec.restart.restart != "always":
            comments.append(f"restart = {spec.restart.restart!r} in the configuration: a Deployment restarts its "
                            "pods whatever their exit.")
        deployment.update({"selector": {"matchLabels": labels}, "template": {"metadata": template, "spec": pod}})
        return ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": self._metadata(host, labels),
                 "spec": deployment}, comments)

    def _wait_for(self, containers: Containers, dependency: ServiceSpec) -> dict[str, Any] | None:
        """An init container waiting until `dependency` is ready at its Service (None: it has no port to ask)."""
        if dependency.port is None or dependency.readiness.kind == "process":
            return None
        host = containers.host(dependency.name)
        return {"name": f"wait-for-{host}", "image": self.image, "imagePullPolicy": "IfNotPresent",
                "args": check_command(dependency.readiness, host, dependency.port, wait=True),
                "resources": {"requests": dict(REQUESTS)}}


def _stream(documents: list[tuple[dict[str, Any], list[str]]]) -> str:
    """Several YAML documents in one file, each after its comments."""
    return "---\n".join(document(value, comments) for value, comments in documents)


def _port_name(spec: ServiceSpec) -> str:
    return "http" if spec.builtin or spec.liveness.kind == "http" else "tcp"


def _probes(spec: ServiceSpec, port: int) -> dict[str, Any]:
    """The supervisor's probes: alive within the startup timeout, then liveness and readiness every interval."""
    period = max(math.ceil(spec.probe_interval), 1)
    probes: dict[str, Any] = {}
    alive, ready = _handler(spec.liveness, port), _handler(spec.readiness, port)
    if alive is not None:
        # Asked every second (the supervisor, every 50 ms) until it passes or the startup timeout has gone.
        probes["startupProbe"] = {**alive, "periodSeconds": 1, "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
                                  "failureThreshold": max(math.ceil(spec.startup_timeout), 1)}
        probes["livenessProbe"] = {**alive, "periodSeconds": period, "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
                                   "failureThreshold": spec.liveness_failures}
    if ready is not None:
        # One failed readiness probe takes a replica out of service, as the supervisor's status does.
        probes["readinessProbe"] = {**ready, "periodSeconds": period, "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
                                    "failureThreshold": 1}
    return probes


def _handler(probe: Probe, port: int) -> dict[str, Any] | None:
    if probe.kind == "http":
        return {"httpGet": {"path": probe.path, "port": port}}
    if probe.kind == "tcp":
        return {"tcpSocket": {"port": port}}
    return None  # `process`: alive while it runs, which is what a running container is
