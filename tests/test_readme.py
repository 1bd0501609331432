"""The README stays true: its first lines are what CI runs, its configuration reference is the schema."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import tomli_w

from tooloo_cli.config.schema import (
    BreakerSettings,
    CacheSettings,
    MODULES,
    Config,
    PoolSettings,
    ProviderSettings,
    QueryOptimizerSettings,
    RateLimiterSettings,
    ServiceSettings,
    TracerSettings,
)

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    """The commands of the README's first code block, without their comments."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("```bash") + 1
    end = lines.index("```", start)
    return [line.split("#", 1)[0].strip() for line in lines[start:end] if line.strip()]


def test_the_readme_opens_with_a_start_command_and_a_test_command() -> None:
    start, test = _setup_commands()
    assert start.startswith("scripts/setup && ") and "tooloo" in start
    assert test.startswith("scripts/setup && ") and "pytest" in test


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1].strip() == _setup_commands()[1]


def _reference() -> dict[str, dict[str, str]]:
    """The README's configuration reference: section -> key -> default, as written."""
    text = (ROOT / "README.md").read_text()
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in text.splitlines():
        heading = re.match(r"^### `\[(.+)\]`$", line)
        if heading:
            current = heading.group(1)
            sections[current] = {}
        elif current and (row := re.match(r"^\| `([a-z_0-9]+)` \| `(.*)` \| .+ \|$", line)):
            sections[current][row.group(1)] = row.group(2)
        elif line.startswith("## "):
            current = None
    return sections


def _toml_value(value: object) -> str:
    return tomli_w.dumps({"v": value})[4:].strip()


def test_the_configuration_reference_lists_every_key_with_its_default() -> None:
    documented = _reference()
    defaults = Config.defaults()
    for name in ("stack", "supervisor", "observe"):
        section = getattr(defaults, name)
        expected = {f.name: _toml_value(getattr(section, f.name)) for f in dataclasses.fields(section)}
        assert documented[name] == expected, name
    for module, settings in (("tracer", TracerSettings), ("rate_limiter", RateLimiterSettings),
                             ("cache", CacheSettings), ("pool", PoolSettings),
                             ("query_optimizer", QueryOptimizerSettings), ("breaker", BreakerSettings),
                             ("provider", ProviderSettings)):
        instance = settings()
        expected = {f.name: _toml_value(getattr(instance, f.name)) for f in dataclasses.fields(settings)}
        assert documented[f"services.NAME.{module}"] == expected, module
    service = ServiceSettings()
    sections = {"tracer", *MODULES}
    expected = {f.name: "-" if getattr(service, f.name) is None else _toml_value(getattr(service, f.name))
                for f in dataclasses.fields(ServiceSettings) if f.name not in sections}
    assert documented["services.NAME"] == expected


def test_every_key_of_tooloo_toml_is_in_the_reference() -> None:
    documented = _reference()
    data = tomllib.loads((ROOT / "tooloo.toml").read_text())
    for section in ("stack", "supervisor", "observe"):
        assert set(data[section]) == set(documented[section])
    for service in data["services"].values():
        for key, value in service.items():
            if isinstance(value, dict) and key != "env":
                assert set(value) == set(documented[f"services.NAME.{key}"]), key
            else:
                assert key in documented["services.NAME"], key


def test_the_readme_links_only_to_what_is_in_the_repository() -> None:
    text = (ROOT / "README.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
               for heading in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith("#"):
            assert target[1:] in anchors, target
            continue
        assert "://" not in target and not target.startswith("/"), target
        resolved = (ROOT / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(ROOT) and resolved.exists(), target


def _tour_screen() -> list[str]:
    """The tour's `tooloo up` screen, as the README shows it."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("$ tooloo up") + 1
    return lines[start:lines.index("```", start)]


def test_the_tours_status_screen_is_what_the_printer_draws() -> None:
    import io

    from tooloo_cli.supervisor.printer import PlainConsole, Printer

    shown = [line for line in _tour_screen() if line.strip() != "…"]
    table, supervisor, summary = shown[:-2], shown[-2], shown[-1]
    services = {}
    for row in table[2:]:  # after the header and its rule
        name, state, _, pid, port, uptime, restarts, exit_code, cpu, memory, unit = row.split()
        assert unit == "MiB" and uptime.endswith("s")
        services[name] = {"name": name, "state": state, "health": "healthy", "ready": True, "pid": int(pid),
                          "port": int(port), "uptime": float(uptime[:-1]), "restarts": int(restarts),
                          "lastExitCode": None if exit_code == "-" else int(exit_code),
                          "cpuPercent": float(cpu.rstrip("%")), "rssBytes": float(memory) * 2**20}
    pid, uptime, memory = re.fullmatch(r"supervisor pid (\d+), up (\d+)s, ([\d.]+) MiB", supervisor).groups()
    document = {"services": services,
                "supervisor": {"pid": int(pid), "uptime": float(uptime), "rssBytes": float(memory) * 2**20}}
    out = io.StringIO()
    Printer(PlainConsole(out, {"COLUMNS": "80"}), list(services)).status_table(document)
    assert out.getvalue().splitlines() == [*table, supervisor]
    assert re.fullmatch(r"8 service\(s\) healthy and ready in [\d.]+s", summary)
