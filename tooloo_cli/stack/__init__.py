"""The stack model: what each service is (`ServiceSpec`) and what it does for the others (topology).

    from tooloo_cli.stack import owner_of, stack_of
    stack = stack_of(load_config())
    [replica.name for replica in stack.replicas()]     # ["web", "training", ..., "capabilities"]
    owner_of("/api/v1/training/overview")               # "training"

    spec.py       ServiceSpec, Replica, Probe, RestartPolicy, Stack: derived once from the configuration
    topology.py   routes → owner, the report's sections, who calls whom, who runs as one process
    probes.py     a Probe asked for real (`check`, `probe_of`): the supervisor's, sd_notify's, the bench's

It sits on the configuration and below everything that runs or shows services: the
supervisor, the services, observe, bench and the exporters all read it.
"""

from tooloo_cli.stack.spec import (
    DEGRADED_HEADER,
    LIVENESS_PATH,
    METRICS_PATH,
    READINESS_PATH,
    SUPERVISOR_METRICS_HOST,
    Probe,
    Replica,
    RestartPolicy,
    ServiceSpec,
    Stack,
    probe_host,
    read_env_file,
    stack_of,
)
from tooloo_cli.stack.topology import ROLES, ROUTES, Role, callees, owner_of, report_sections, route_of

__all__ = [
    "ROLES",
    "ROUTES",
    "DEGRADED_HEADER",
    "LIVENESS_PATH",
    "METRICS_PATH",
    "READINESS_PATH",
    "SUPERVISOR_METRICS_HOST",
    "Probe",
    "Replica",
    "RestartPolicy",
    "Role",
    "ServiceSpec",
    "Stack",
    "callees",
    "owner_of",
    "route_of",
    "probe_host",
    "read_env_file",
    "report_sections",
    "stack_of",
]
