"""The stack model: services declared once in tooloo.toml, their specs, the topology, the checks."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tooloo_cli.config import BUILTIN_SERVICES, ConfigError, load_config
from tooloo_cli.stack import ROLES, Probe, callees, owner_of, read_env_file, report_sections, stack_of

ROOT = Path(__file__).resolve().parent.parent


def _load(tmp_path: Path, text: str):
    path = tmp_path / "tooloo.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env={})


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        stack_of(_load(tmp_path, text))
    assert caught.value.exit_code == 2
    return str(caught.value)


# -- the built-in services -----------------------------------------------------------------


def test_every_builtin_service_has_one_role_and_nothing_else_does() -> None:
    assert set(ROLES) == set(BUILTIN_SERVICES)


def test_the_gateway_routes_every_api_prefix_to_its_owner() -> None:
    assert owner_of("/api/v1/training/overview") == "training"
    assert owner_of("/api/v1/budget") == "budget" and owner_of("/api/v1/providers/burst") == "budget"
    assert owner_of("/api/v4/meta-learning/insights") == "meta"
    assert owner_of("/api/v9/nothing") is None
    assert set(callees("web")) == set(BUILTIN_SERVICES) - {"web"}


def test_the_report_fans_out_to_every_service_with_a_section() -> None:
    assert set(report_sections()) == {"training", "meta", "segmentation", "budget", "coach", "capabilities"}
    assert set(callees("reports")) == set(report_sections())
    assert callees("meta") == ("training",) and callees("coach") == ("training",) and callees("budget") == ()


def test_a_builtin_spec_runs_tooloo_serve_and_probes_health_and_ready(tmp_path: Path) -> None:
    loaded = _load(tmp_path, "[services.budget]\nport = 4103\n")
    spec = stack_of(loaded).specs["budget"]
    assert spec.builtin and spec.port == 4103 and spec.url == "http://127.0.0.1:4103"
    assert spec.argv(spec.replicas[0]) == (sys.executable, "-m", "tooloo_cli.services", "--config",
                                           str(loaded.source), "--port", "4103", "budget")
    assert spec.liveness == Probe("http", "/health") and spec.readiness == Probe("http", "/ready")
    assert spec.secrets == ("OPENAI_API_KEY",) and spec.restart.refusal_exit_code == 2
    assert {path.name for path in spec.state_files} == {"budget.db", "budget-cache.db"}
    assert [r.name for r in stack_of(loaded).replicas()] == list(BUILTIN_SERVICES)


# -- replicas --------------------------------------------------------------------------------


def test_replicas_get_consecutive_ports_names_and_urls(tmp_path: Path) -> None:
    stack = stack_of(_load(tmp_path, "[services.budget]\nport = 4103\nreplicas = 3\n"))
    replicas = stack.specs["budget"].replicas
    assert [(r.name, r.port) for r in replicas] == [("budget.1", 4103), ("budget.2", 4104), ("budget.3", 4105)]
    assert stack.urls("budget") == ("http://127.0.0.1:4103", "http://127.0.0.1:4104", "http://127.0.0.1:4105")
    assert [r.name for r in stack.replicas(["budget.2", "web"])] == ["web", "budget.2"]


def test_replica_ports_must_not_run_into_another_service(tmp_path: Path) -> None:
    message = _error(tmp_path, "[services.budget]\nport = 3003\nreplicas = 2\n\n[services.coach]\nport = 3004\n")
    assert "line" in message and "3004" in message and "port+N-1" in message


@pytest.mark.parametrize("name", ["training", "coach", "capabilities"])
def test_services_whose_state_lives_in_their_process_refuse_replicas(tmp_path: Path, name: str) -> None:
    message = _error(tmp_path, f"[services.{name}]\nport = 5000\nreplicas = 2\n")
    assert f"services.{name}.replicas = 2" in message and "one process only" in message
    assert ("redis_url" in message) == (name == "coach")  # the remedy is named only where there is one


def test_coach_runs_as_several_replicas_given_redis_and_the_others_still_do_not(tmp_path: Path) -> None:
    redis = '[stack]\nredis_url = "unix:///run/redis.sock"\n\n'
    stack = stack_of(_load(tmp_path, redis + "[services.coach]\nport = 5000\nreplicas = 2\n"))
    assert [r.name for r in stack.specs["coach"].replicas] == ["coach.1", "coach.2"]
    assert "one process only" in _error(tmp_path, redis + "[services.training]\nport = 5000\nreplicas = 2\n")


def test_the_default_url_is_where_the_service_listens(tmp_path: Path) -> None:
    stack = stack_of(_load(tmp_path, '[services.training]\nport = 4101\nbind = "127.0.0.2"\n\n'
                                     '[services.meta]\nport = 4102\nbind = "0.0.0.0"\n'))
    assert stack.urls("training") == ("http://127.0.0.2:4101",)
    assert stack.urls("meta") == ("http://127.0.0.1:4102",)  # a wildcard bind is dialled on loopback


def test_an_explicit_url_is_advertised_and_moves_on_per_replica(tmp_path: Path) -> None:
    stack = stack_of(_load(tmp_path, '[services.reports]\nport = 4108\nreplicas = 2\nurl = "http://10.0.0.7:4108"\n'
                                     'bind = "0.0.0.0"\n'))
    assert stack.urls("reports") == ("http://10.0.0.7:4108", "http://10.0.0.7:4109")
    assert stack.specs["reports"].bind == "0.0.0.0"


@pytest.mark.parametrize(("url", "problem"), [
    ("https://10.0.0.7:4108", "http:// URL"), ("http://10.0.0.7:4108/api", "no path"), ("not a url", "http:// URL"),
    ("http://bad_host:1", "neither an IP address"),
])
def test_a_url_that_cannot_be_dialled_is_refused(tmp_path: Path, url: str, problem: str) -> None:
    assert problem in _error(tmp_path, f'[services.reports]\nurl = "{url}"\n')


# -- dependencies ------------------------------------------------------------------------------


def test_dependencies_order_the_start_and_reverse_the_stop(tmp_path: Path) -> None:
    stack = stack_of(_load(tmp_path, '[services.web]\ndepends_on = ["meta"]\n\n[services.meta]\n'
                                     'depends_on = ["training"]\n'))
    order = stack.start_order()
    assert order.index("training") < order.index("meta") < order.index("web")
    assert stack.with_dependencies(["web"]) == ["training", "meta", "web"]
    assert stack.stop_waves(["web", "meta", "training", "budget"]) == [["web"], ["meta"], ["training", "budget"]]


def test_a_dependency_cycle_is_a_configuration_error(tmp_path: Path) -> None:
    message = _error(tmp_path, '[services.meta]\ndepends_on = ["coach"]\n\n[services.coach]\ndepends_on = ["meta"]\n')
    assert "circle" in message and "meta -> coach -> meta" in message and "line" in message


def test_an_unknown_or_own_dependency_is_named(tmp_path: Path) -> None:
    assert "'trainig'" in _error(tmp_path, '[services.meta]\ndepends_on = ["trainig"]\n')
    assert "did you mean 'training'" in _error(tmp_path, '[services.meta]\ndepends_on = ["trainig"]\n')
    assert "depends on itself" in _error(tmp_path, '[services.meta]\ndepends_on = ["meta"]\n')


# -- services of one's own ----------------------------------------------------------------------


def test_a_command_service_is_declared_by_its_command(tmp_path: Path) -> None:
    loaded = _load(tmp_path, '[services.redis]\ncommand = ["redis-server", "--port", "6390"]\nport = 6390\n\n'
                             '[services.worker]\ncommand = ["./work.sh"]\ncwd = "jobs"\nrestart = "on-failure"\n\n'
                             '[services.api]\ncommand = ["./api"]\nport = 7000\nhealth_path = "/healthz"\n')
    stack = stack_of(loaded)
    redis, worker, api = stack.specs["redis"], stack.specs["worker"], stack.specs["api"]
    assert not redis.builtin and redis.argv(redis.replicas[0]) == ("redis-server", "--port", "6390")
    assert redis.liveness == Probe("tcp") and redis.readiness == Probe("tcp") and redis.secrets == ()
    assert worker.port is None and worker.liveness == Probe("process") and worker.cwd == tmp_path / "jobs"
    assert worker.restart.restart == "on-failure" and worker.restart.refusal_exit_code is None
    assert api.liveness == api.readiness == Probe("http", "/healthz")


@pytest.mark.parametrize(("text", "problem"), [
    ("[services.redis]\nport = 6390\n", "no `command`"),
    ('[services.web]\ncommand = ["nginx"]\n', "one of tooloo's own services"),
    ('[services.Redis]\ncommand = ["redis-server"]\n', "cannot name a service"),
    ('[services.redis]\ncommand = []\n', "must name a program"),
    ('[services.redis]\ncommand = ["redis-server"]\n\n[services.redis.cache]\nttl_seconds = 1\n', "embeds no cache"),
    ('[services.redis]\ncommand = ["redis-server"]\nhealth_path = "/"\n', "needs services.redis.port"),
    ('[services.redis]\ncommand = ["x"]\nport = 6390\nreplicas = 2\n', "only for a command that listens on none"),
    ('[services.redis]\ncommand = ["x"]\nenv = {"1BAD" = "x"}\n', "not an environment variable name"),
    ('[services.redis]\ncommand = ["x"]\nrestart = "sometimes"\n', "one of always, on-failure, no"),
    ('[services.budget]\nhealth_path = "/up"\n', "is for a service of your own"),
    ('[services.budget]\nbackoff_initial = 20.0\n', "backoff_initial must not exceed backoff_max"),
])
def test_a_command_service_that_cannot_run_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    assert problem in _error(tmp_path, text)


# -- environment files ---------------------------------------------------------------------------


def test_an_env_file_is_read_with_dotenv_syntax_and_env_wins(tmp_path: Path) -> None:
    (tmp_path / "budget.env").write_text(
        '# the provider\nexport A=1\nB = "two words # kept"\nC=\'$NOT_EXPANDED\'\nD=plain # a comment\n'
        'E="line\\nbreak \\"quoted\\""\n\nF=\n', encoding="utf-8")
    spec = stack_of(_load(tmp_path, '[services.budget]\nenv_file = "budget.env"\nenv = {F = "from env"}\n')).specs[
        "budget"]
    assert spec.environment() == {"A": "1", "B": "two words # kept", "C": "$NOT_EXPANDED", "D": "plain",
                                  "E": 'line\nbreak "quoted"', "F": "from env"}


@pytest.mark.parametrize(("text", "problem"), [("NO_EQUALS\n", "line 1: expected KEY=value"),
                                               ('A="open\n', "line 1: the value's \" is never closed"),
                                               ("X=1\n2X=3\n", "line 2")])
def test_a_broken_env_file_names_its_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.env"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=problem):
        read_env_file(path)


def test_a_missing_env_file_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    spec = stack_of(_load(tmp_path, '[services.budget]\nenv_file = "nowhere.env"\n')).specs["budget"]
    with pytest.raises(ConfigError, match="nowhere.env: cannot read"):
        spec.environment()


# -- per-service supervision ------------------------------------------------------------------------


def test_supervision_settings_are_overridden_per_service(tmp_path: Path) -> None:
    stack = stack_of(_load(tmp_path, "[supervisor]\ngrace_period = 4.0\n\n[services.budget]\ngrace_period = 9.0\n"
                                     "backoff_max = 2.0\ncrash_loop_limit = 2\n"))
    budget, web = stack.specs["budget"], stack.specs["web"]
    assert (budget.grace_period, budget.restart.backoff_max, budget.restart.crash_loop_limit) == (9.0, 2.0, 2)
    assert (web.grace_period, web.restart.backoff_max, web.restart.crash_loop_limit) == (4.0, 10.0, 5)


# -- one list of the services, no import circles ----------------------------------------------


def _project_imports() -> dict[str, set[str]]:
    """Module → the project modules it imports (at any level of the file)."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "tooloo_cli").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tooloo_cli"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("tooloo_cli")}
        graph[module] = found
    return graph


def test_no_module_lists_the_services_but_the_configurations_defaults() -> None:
    """The eight are declared by the schema's defaults; the topology's table of what each does for the
    others is keyed by them (test_every_builtin_service_has_one_role_and_nothing_else_does). Nowhere else."""
    holders = []
    for path in (ROOT / "tooloo_cli").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                names = {item.value for item in items if isinstance(item, ast.Constant)}
                if len(names & set(BUILTIN_SERVICES)) >= 4:
                    holders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert sorted(holder.split(":")[0] for holder in holders) == ["tooloo_cli/config/schema.py",
                                                                  "tooloo_cli/stack/topology.py"], holders


def test_the_layers_hold_and_nothing_imports_in_a_circle() -> None:
    graph = _project_imports()
    for module, imported in graph.items():
        if module.startswith("tooloo_cli.resilience"):
            assert all(i.startswith("tooloo_cli.resilience") for i in imported), module
        if module.startswith("tooloo_cli.config"):
            assert all(i.startswith(("tooloo_cli.config", "tooloo_cli.errors")) for i in imported), module
        if module.startswith("tooloo_cli.stack"):
            assert all(i.startswith(("tooloo_cli.stack", "tooloo_cli.config", "tooloo_cli.errors"))
                       for i in imported), module
        if module.startswith("tooloo_cli.services"):
            assert not any(i.startswith("tooloo_cli.supervisor") for i in imported), module
        if module.startswith("tooloo_cli.supervisor"):
            assert not any(i.startswith("tooloo_cli.services") for i in imported), module

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, " -> ".join([*path, module])
        for imported in graph.get(module, ()):
            if imported in graph and imported != module:
                visit(imported, [*path, module])

    for module in ("tooloo_cli.services.service", "tooloo_cli.services.upstream", "tooloo_cli.supervisor.manager"):
        visit(module, [])
