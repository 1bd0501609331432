"""Tests of `tooloo.toml`: defaults, validation messages, environment overrides, discovery.

Every test calls `load_config(path, env={...}, cwd=...)` directly, with an explicit `env`
so that the real environment (a stray TOOLOO_* variable) cannot change the outcome.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tooloo_cli.config import (
    SERVICE_MODULES,
    Config,
    ConfigError,
    config_to_dict,
    config_to_toml,
    find_config_file,
    load_config,
)
from tooloo_cli.errors import ToolooError, UsageError

REPO_ROOT = Path(__file__).resolve().parents[1]

SPEC_PORTS = {
    "web": 3000,
    "training": 3001,
    "meta": 3002,
    "budget": 3003,
    "coach": 3004,
    "segmentation": 3007,
    "reports": 3008,
    "capabilities": 3009,
}

SPEC_SAMPLING = {
    "web": 0.10,
    "training": 0.15,
    "meta": 0.20,
    "budget": 0.10,
    "coach": 0.10,
    "segmentation": 0.15,
    "reports": 0.20,
    "capabilities": 0.10,
}

OPTIONAL_MODULES = ("rate_limiter", "cache", "pool", "query_optimizer", "breaker", "provider")


# -- helpers --------------------------------------------------------------------------


def write_toml(directory: Path, text: str, name: str = "tooloo.toml") -> Path:
    """Writes `text` as a TOML file in `directory` and returns its path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path, env: dict[str, str] | None = None) -> str:
    """Loads `path` expecting a ConfigError; returns its message."""
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {}, cwd=path.parent)
    return str(info.value)


def env_error(env: dict[str, str], cwd: Path) -> str:
    """Loads the defaults with `env` expecting a ConfigError; returns its message."""
    with pytest.raises(ConfigError) as info:
        load_config(None, env=env, cwd=cwd)
    return str(info.value)


def no_config_above(directory: Path) -> bool:
    """True when neither `directory` nor any of its parents holds a tooloo.toml."""
    resolved = directory.resolve()
    return not any((d / "tooloo.toml").is_file() for d in (resolved, *resolved.parents))


# -- defaults -------------------------------------------------------------------------


def test_defaults_have_the_eight_services_on_their_spec_ports() -> None:
    services = Config.defaults().services
    assert {name: s.port for name, s in services.items()} == SPEC_PORTS


def test_defaults_have_spec_sampling_rates() -> None:
    services = Config.defaults().services
    assert {name: s.tracer.sampling_rate for name, s in services.items()} == pytest.approx(SPEC_SAMPLING)


def test_default_rate_limiters_match_spec() -> None:
    services = Config.defaults().services
    web, budget = services["web"].rate_limiter, services["budget"].rate_limiter
    assert web is not None and budget is not None
    assert (web.capacity, web.refill_rate) == (1000, 100.0)
    assert (budget.capacity, budget.refill_rate) == (100, 10.0)


def test_default_cache_ttls_match_spec() -> None:
    services = Config.defaults().services
    budget, reports = services["budget"].cache, services["reports"].cache
    assert budget is not None and reports is not None
    assert budget.ttl_seconds == 5.0
    assert reports.ttl_seconds == 10.0


def test_defaults_embed_exactly_the_modules_of_the_spec_table() -> None:
    services = Config.defaults().services
    assert set(services) == set(SERVICE_MODULES)
    for name, service in services.items():
        present = {module for module in OPTIONAL_MODULES if getattr(service, module) is not None}
        assert present == set(SERVICE_MODULES[name]), name


def test_loading_without_a_file_gives_the_defaults(tmp_path: Path) -> None:
    if not no_config_above(tmp_path):
        pytest.skip("a tooloo.toml above the temporary directory would be discovered")
    loaded = load_config(None, env={}, cwd=tmp_path)
    assert loaded.config == Config.defaults()


# -- writing --------------------------------------------------------------------------


def test_repository_tooloo_toml_is_the_generated_default() -> None:
    committed = (REPO_ROOT / "tooloo.toml").read_text(encoding="utf-8")
    assert committed == config_to_toml(Config.defaults())


def test_repository_tooloo_toml_loads_as_the_defaults() -> None:
    loaded = load_config(REPO_ROOT / "tooloo.toml", env={})
    assert loaded.config == Config.defaults()


def test_defaults_round_trip_through_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, config_to_toml(Config.defaults()))
    assert load_config(path, env={}).config == Config.defaults()


def test_changed_settings_round_trip_through_toml(tmp_path: Path) -> None:
    config = Config.defaults()
    config.stack.trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]
    config.supervisor.grace_period = 1.5
    config.services["budget"].cache.ttl_seconds = 42.0  # type: ignore[union-attr]
    config.services["budget"].provider.kind = "openai"  # type: ignore[union-attr]
    config.services["web"].port = 18000
    config.services["capabilities"].pool.max_size = 9  # type: ignore[union-attr]
    path = write_toml(tmp_path, config_to_toml(config))
    assert load_config(path, env={}).config == config


def test_config_to_dict_leaves_out_modules_a_service_lacks() -> None:
    data = config_to_dict(Config.defaults())
    assert "cache" not in data["services"]["training"]
    assert set(data["services"]["training"]) == {"port", "replicas", "depends_on", "restart", "tracer"}
    assert "provider" in data["services"]["budget"]


# -- syntax, types and ranges -----------------------------------------------------------


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[stack]\nhost = "127.0.0.1"\nstate_dir = \n')
    message = load_error(path)
    assert str(path) in message
    assert "line 3" in message


def test_wrong_type_names_file_line_and_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '# comment\n[services.budget]\nport = "abc"\n')
    message = load_error(path)
    assert str(path) in message
    assert "line 3" in message
    assert "services.budget.port" in message
    assert "'abc'" in message


def test_float_for_an_integer_setting_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[services.web]\nport = 3000.5\n")
    assert "services.web.port" in load_error(path)


def test_boolean_for_a_number_setting_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[services.budget.cache]\nttl_seconds = true\n")
    assert "services.budget.cache.ttl_seconds" in load_error(path)


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("[services.web.tracer]\nmax_traces = 5\nsampling_rate = 1.5\n", 3, "services.web.tracer.sampling_rate"),
        ("[services.reports.tracer]\nsampling_rate = -0.1\n", 2, "services.reports.tracer.sampling_rate"),
        ("[stack]\nhost = '0.0.0.0'\n\n[services.web]\nport = 0\n", 5, "services.web.port"),
        ("[services.coach]\nport = 70000\n", 2, "services.coach.port"),
        ("[services.budget.cache]\nttl_seconds = -1\n", 2, "services.budget.cache.ttl_seconds"),
        ("[services.budget.cache]\nttl_seconds = 0\n", 2, "services.budget.cache.ttl_seconds"),
        ("[services.budget.provider]\nkind = 'magic'\n", 2, "services.budget.provider.kind"),
    ],
    ids=["sampling-above-1", "sampling-negative", "port-0", "port-too-high", "ttl-negative", "ttl-zero",
         "provider-kind"],
)
def test_out_of_range_value_names_file_line_and_key(tmp_path: Path, text: str, line: int, key: str) -> None:
    path = write_toml(tmp_path, text)
    message = load_error(path)
    assert str(path) in message
    assert f"line {line}" in message
    assert key in message


def test_dotted_keys_are_located_on_their_line(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[services]\nweb.port = 3000\nbudget.port = 'x'\n")
    message = load_error(path)
    assert "line 3" in message
    assert "services.budget.port" in message


def test_section_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "stack = 3\n")
    message = load_error(path)
    assert "line 1" in message
    assert "stack must be a table" in message


# -- unknown names ----------------------------------------------------------------------


def test_unknown_key_suggests_the_nearest_valid_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[services.budget.cache]\nttl = 3\n")
    message = load_error(path)
    assert str(path) in message
    assert "line 2" in message
    assert "services.budget.cache.ttl" in message
    assert "did you mean 'ttl_seconds'" in message


def test_misspelt_key_suggests_the_nearest_valid_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[supervisor]\ngrace_perod = 3\n")
    message = load_error(path)
    assert "supervisor.grace_perod" in message
    assert "did you mean 'grace_period'" in message


def test_unknown_service_suggests_the_nearest_service(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[services.bugdet]\nport = 4000\n")
    message = load_error(path)
    assert "line 1" in message
    assert "'bugdet'" in message
    assert "did you mean 'budget'" in message


def test_unknown_section_suggests_the_nearest_section(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[stack]\nhost = '127.0.0.1'\n[supervisr]\ngrace_period = 1\n")
    message = load_error(path)
    assert "line 3" in message
    assert "'supervisr'" in message
    assert "did you mean 'supervisor'" in message


def test_section_for_a_module_the_service_lacks_lists_what_it_embeds(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[services.training.cache]\nttl_seconds = 3\n")
    message = load_error(path)
    assert str(path) in message
    assert "line 1" in message
    assert "training" in message
    assert "embeds: tracer)" in message


def test_section_for_a_missing_module_lists_every_module_of_the_service(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[services.reports.pool]\nmax_size = 3\n")
    message = load_error(path)
    assert "reports" in message
    assert "embeds: tracer, cache, breaker" in message


# -- consistency ------------------------------------------------------------------------


def test_duplicate_ports_are_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[services.web]\nport = 15000\n\n[services.budget]\nport = 15000\n")
    message = load_error(path)
    assert str(path) in message
    assert "line 5" in message
    assert "15000" in message
    assert "web" in message and "budget" in message


def test_a_metrics_port_a_service_listens_on_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[services.budget]\nport = 15003\n\n[supervisor]\nmetrics_port = 15003\n")
    message = load_error(path)
    assert "supervisor.metrics_port 15003 is already the port of budget" in message
    assert "line 5" in message


def test_pool_min_size_above_max_size_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[services.budget.pool]\nmin_size = 5\nmax_size = 2\n")
    message = load_error(path)
    assert "line 2" in message
    assert "services.budget.pool.min_size" in message


def test_backoff_initial_above_backoff_max_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[supervisor]\nbackoff_initial = 20.0\nbackoff_max = 10.0\n")
    message = load_error(path)
    assert "line 2" in message
    assert "supervisor.backoff_initial" in message


def test_invalid_trusted_proxy_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[stack]\ntrusted_proxies = ["10.0.0.0/8", "not-an-ip"]\n')
    message = load_error(path)
    assert "line 2" in message
    assert "stack.trusted_proxies" in message
    assert "'not-an-ip'" in message


def test_valid_trusted_proxies_are_accepted(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[stack]\ntrusted_proxies = ["10.0.0.0/8", "192.168.1.7", "::1"]\n')
    assert load_config(path, env={}).config.stack.trusted_proxies == ["10.0.0.0/8", "192.168.1.7", "::1"]


def test_trusted_proxies_must_be_a_list_of_strings(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[stack]\ntrusted_proxies = [1, 2]\n")
    assert "stack.trusted_proxies" in load_error(path)


# -- environment overrides ----------------------------------------------------------------


def test_env_override_sets_a_nested_setting(tmp_path: Path) -> None:
    variable = "TOOLOO_SERVICES__BUDGET__CACHE__TTL_SECONDS"
    loaded = load_config(None, env={variable: "10"}, cwd=tmp_path)
    cache = loaded.config.services["budget"].cache
    assert cache is not None
    assert cache.ttl_seconds == 10.0
    assert isinstance(cache.ttl_seconds, float)
    assert loaded.overrides == [variable]


def test_env_override_takes_precedence_over_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[services.budget.cache]\nttl_seconds = 7\n")
    loaded = load_config(path, env={"TOOLOO_SERVICES__BUDGET__CACHE__TTL_SECONDS": "11"})
    assert loaded.config.services["budget"].cache.ttl_seconds == 11.0  # type: ignore[union-attr]


def test_env_override_parses_a_toml_list(tmp_path: Path) -> None:
    loaded = load_config(None, env={"TOOLOO_STACK__TRUSTED_PROXIES": '["10.0.0.0/8"]'}, cwd=tmp_path)
    assert loaded.config.stack.trusted_proxies == ["10.0.0.0/8"]


def test_env_override_takes_bare_text_as_a_string(tmp_path: Path) -> None:
    loaded = load_config(None, env={"TOOLOO_STACK__HOST": "0.0.0.0"}, cwd=tmp_path)
    assert loaded.config.stack.host == "0.0.0.0"


def test_unknown_env_override_names_the_variable_and_nearest_key(tmp_path: Path) -> None:
    variable = "TOOLOO_SERVICES__BUDGET__CACHE__TTL_SECOND"
    message = env_error({variable: "10"}, tmp_path)
    assert variable in message
    assert "did you mean 'ttl_seconds'" in message


def test_env_override_for_an_unknown_service_names_the_variable_and_nearest_service(tmp_path: Path) -> None:
    variable = "TOOLOO_SERVICES__BUGDET__PORT"
    message = env_error({variable: "4000"}, tmp_path)
    assert variable in message
    assert "did you mean 'budget'" in message


def test_env_override_for_an_unknown_section_names_the_variable(tmp_path: Path) -> None:
    variable = "TOOLOO_SUPERVISR__GRACE_PERIOD"
    message = env_error({variable: "1"}, tmp_path)
    assert variable in message
    assert "did you mean 'supervisor'" in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TOOLOO_SERVICES__BUDGET__PORT", "abc"),
        ("TOOLOO_SERVICES__WEB__TRACER__SAMPLING_RATE", "1.5"),
        ("TOOLOO_STACK__TRUSTED_PROXIES", "not-a-list"),
    ],
)
def test_bad_env_override_value_names_the_variable(tmp_path: Path, variable: str, value: str) -> None:
    message = env_error({variable: value}, tmp_path)
    assert f"environment variable {variable}" in message


def test_env_override_for_a_module_the_service_lacks_is_refused(tmp_path: Path) -> None:
    variable = "TOOLOO_SERVICES__TRAINING__CACHE__TTL_SECONDS"
    message = env_error({variable: "3"}, tmp_path)
    assert variable in message
    assert "embeds: tracer" in message


def test_variables_without_double_underscore_are_not_overrides(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[services.web]\nport = 3000\n")
    env = {"TOOLOO_CONFIG": str(path), "TOOLOO_DEBUG": "1", "TOOLOO_ANYTHING": "x", "OTHER__THING": "y"}
    loaded = load_config(None, env=env, cwd=tmp_path)
    assert loaded.overrides == []
    assert loaded.config == Config.defaults()


def test_overrides_list_every_applied_variable(tmp_path: Path) -> None:
    env = {
        "TOOLOO_SERVICES__WEB__PORT": "18000",
        "TOOLOO_SUPERVISOR__GRACE_PERIOD": "2",
        "TOOLOO_DEBUG": "1",
        "PATH": "/usr/bin",
    }
    loaded = load_config(None, env=env, cwd=tmp_path)
    assert sorted(loaded.overrides) == ["TOOLOO_SERVICES__WEB__PORT", "TOOLOO_SUPERVISOR__GRACE_PERIOD"]
    assert loaded.config.services["web"].port == 18000
    assert loaded.config.supervisor.grace_period == 2.0


def test_env_override_is_checked_for_consistency(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="3003"):
        load_config(None, env={"TOOLOO_SERVICES__WEB__PORT": "3003"}, cwd=tmp_path)


# -- discovery ------------------------------------------------------------------------------


def test_explicit_path_is_read(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "ops", "[services.web]\nport = 18080\n", name="custom.toml")
    loaded = load_config(path, env={}, cwd=tmp_path)
    assert loaded.source == path
    assert loaded.config.services["web"].port == 18080


def test_explicit_path_wins_over_tooloo_config(tmp_path: Path) -> None:
    explicit = write_toml(tmp_path, "[services.web]\nport = 18081\n", name="a.toml")
    other = write_toml(tmp_path, "[services.web]\nport = 18082\n", name="b.toml")
    loaded = load_config(explicit, env={"TOOLOO_CONFIG": str(other)}, cwd=tmp_path)
    assert loaded.source == explicit
    assert loaded.config.services["web"].port == 18081


def test_tooloo_config_variable_is_read(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "elsewhere", "[services.web]\nport = 18083\n", name="x.toml")
    (tmp_path / "work").mkdir()
    loaded = load_config(None, env={"TOOLOO_CONFIG": str(path)}, cwd=tmp_path / "work")
    assert loaded.source == path
    assert loaded.config.services["web"].port == 18083


def test_nearest_tooloo_toml_is_found_from_a_nested_directory(tmp_path: Path) -> None:
    outer = write_toml(tmp_path, "[services.web]\nport = 18084\n")
    inner = write_toml(tmp_path / "project", "[services.web]\nport = 18085\n")
    nested = tmp_path / "project" / "src" / "deep"
    nested.mkdir(parents=True)
    loaded = load_config(None, env={}, cwd=nested)
    assert loaded.source is not None
    assert loaded.source.resolve() == inner.resolve()
    assert loaded.config.services["web"].port == 18085
    assert find_config_file(None, {}, tmp_path / "project" / "src") == inner.resolve()
    assert find_config_file(None, {}, tmp_path).resolve() == outer.resolve()  # type: ignore[union-attr]


def test_no_file_anywhere_gives_defaults_with_no_source(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    if not no_config_above(nested):
        pytest.skip("a tooloo.toml above the temporary directory would be discovered")
    loaded = load_config(None, env={}, cwd=nested)
    assert loaded.source is None
    assert loaded.config == Config.defaults()
    assert loaded.overrides == []
    assert loaded.base_dir == nested.resolve()


def test_explicit_missing_path_raises(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={}, cwd=tmp_path)
    assert str(missing) in str(info.value)
    assert "--config" in str(info.value)


def test_missing_tooloo_config_target_raises_naming_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"TOOLOO_CONFIG": str(missing)}, cwd=tmp_path)
    assert str(missing) in str(info.value)
    assert "TOOLOO_CONFIG" in str(info.value)


def test_state_path_resolves_beside_the_config_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "ops", "[stack]\nstate_dir = 'state'\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    loaded = load_config(path, env={}, cwd=elsewhere)
    assert loaded.state_path() == (tmp_path / "ops").resolve() / "state"
    assert loaded.state_path("budget.db") == (tmp_path / "ops").resolve() / "state" / "budget.db"


def test_default_state_path_is_dot_tooloo_beside_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "")
    loaded = load_config(path, env={})
    assert loaded.state_path("x.pid") == tmp_path.resolve() / ".tooloo" / "x.pid"


def test_absolute_state_dir_is_kept(tmp_path: Path) -> None:
    absolute = tmp_path / "abs-state"
    path = write_toml(tmp_path / "ops", f"[stack]\nstate_dir = '{absolute.as_posix()}'\n")
    assert load_config(path, env={}).state_path("s.sock") == absolute / "s.sock"


def test_state_path_without_a_file_resolves_against_cwd(tmp_path: Path) -> None:
    if not no_config_above(tmp_path):
        pytest.skip("a tooloo.toml above the temporary directory would be discovered")
    loaded = load_config(None, env={}, cwd=tmp_path)
    assert loaded.state_path() == tmp_path.resolve() / ".tooloo"


# -- the error type -------------------------------------------------------------------------


def test_config_error_is_a_usage_error_with_exit_code_2() -> None:
    assert issubclass(ConfigError, UsageError)
    assert issubclass(ConfigError, ToolooError)
    error = ConfigError("x")
    assert isinstance(error, UsageError)
    assert error.exit_code == 2


def test_defaults_are_fresh_objects_each_time() -> None:
    first, second = Config.defaults(), Config.defaults()
    first.services["web"].port = 1
    first.stack.trusted_proxies.append("10.0.0.1")
    assert second.services["web"].port == 3000
    assert second.stack.trusted_proxies == []
    assert dataclasses.asdict(second) == dataclasses.asdict(Config.defaults())


# -- every value that validates must also run -------------------------------------------------------


def _numeric_fields() -> list[tuple[str, dataclasses.Field]]:
    from tooloo_cli.config import schema

    sections = [schema.StackSettings, schema.SupervisorSettings, schema.ObserveSettings, schema.ServiceSettings,
                schema.TracerSettings, schema.RateLimiterSettings, schema.CacheSettings, schema.PoolSettings,
                schema.QueryOptimizerSettings, schema.BreakerSettings, schema.ProviderSettings]
    return [(f"{section.__name__}.{f.name}", f) for section in sections for f in dataclasses.fields(section)
            if f.type in ("int", "float")]


def test_every_number_has_a_finite_upper_bound() -> None:
    fields = _numeric_fields()
    assert len(fields) > 40  # the introspection found the settings
    assert [name for name, f in fields if f.metadata.get("le") is None] == []


@pytest.mark.parametrize(("text", "key"), [
    ("[supervisor]\ngrace_period = inf\n", "supervisor.grace_period"),
    ("[supervisor]\ngrace_period = 1e308\n", "supervisor.grace_period"),
    ("[supervisor]\nstartup_timeout = nan\n", "supervisor.startup_timeout"),
    ("[services.web.tracer]\nmax_traces = 1000000000000000000000000\n", "services.web.tracer.max_traces"),
    ("[stack]\nmax_body_bytes = 99999999999999\n", "stack.max_body_bytes"),
    ("[observe]\ninterval = 0.0001\n", "observe.interval"),
])
def test_values_that_would_break_the_stack_are_refused(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write_toml(tmp_path, text), env={})


@pytest.mark.parametrize("host", ["not a host", "-leading.example", "a..b", "x" * 300, ""])
def test_a_host_that_is_no_address_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError, match="stack.host"):
        load_config(write_toml(tmp_path, f'[stack]\nhost = "{host}"\n'), env={})


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "0.0.0.0", "localhost", "tooloo-1.internal"])
def test_addresses_and_host_names_are_accepted(tmp_path: Path, host: str) -> None:
    assert load_config(write_toml(tmp_path, f'[stack]\nhost = "{host}"\n'), env={}).config.stack.host == host


@pytest.mark.parametrize("url", ["http://llm.example.com/v1", "ftp://llm.example.com", "llm.example.com",
                                 "http://10.0.0.5:8080/v1", "https://:443/v1"])
def test_a_provider_url_that_would_leak_the_key_or_is_no_url_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="base_url"):
        load_config(write_toml(tmp_path, f'[services.budget.provider]\nbase_url = "{url}"\n'), env={})


@pytest.mark.parametrize("url", ["https://api.openai.com/v1", "http://127.0.0.1:8080/v1", "http://localhost:11434/v1",
                                 "http://[::1]:8000"])
def test_https_and_loopback_provider_urls_are_accepted(tmp_path: Path, url: str) -> None:
    load_config(write_toml(tmp_path, f'[services.budget.provider]\nbase_url = "{url}"\n'), env={})


def test_an_api_key_variable_must_be_a_variable_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="api_key_env"):
        load_config(write_toml(tmp_path, '[services.budget.provider]\napi_key_env = "MY KEY"\n'), env={})


def test_a_broken_file_still_gives_the_way_to_the_running_stack(tmp_path: Path) -> None:
    from tooloo_cli.config import load_config_leniently

    path = write_toml(tmp_path, '[stack]\nstate_dir = "elsewhere"\n\n[services.web\nport = 1\n')
    loaded, problem = load_config_leniently(path, env={})
    assert problem is not None and "invalid TOML" in problem
    assert loaded.state_path() == tmp_path.resolve() / "elsewhere" and loaded.source == path
