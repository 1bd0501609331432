"""`tooloo export`: the exporter room and its first format, `prometheus`, checked with the real promtool.

What Prometheus makes of the file is asked of Prometheus's own code: `promtool check config`
validates it, and `promtool check service-discovery` reports each job's targets with their
final labels (it waits its whole --timeout, busily, so it runs only for the jobs that say
something). The command runs as a real subprocess in tmp_path, with --config and no
TOOLOO_* variable, so neither the developer's environment nor a tooloo.toml above changes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import unavailable

from tooloo_cli.config import BUILTIN_SERVICES, load_config
from tooloo_cli.errors import UsageError
from tooloo_cli.export import Declaration, File, OutputRefused, exporter, formats, render, to_stdout, write
from tooloo_cli.export.prometheus import PrometheusExporter
from tooloo_cli.export.yaml_text import document
from tooloo_cli.stack import stack_of

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "tooloo.toml"
SHIPPED_PORTS = {"web": 3000, "training": 3001, "meta": 3002, "budget": 3003, "coach": 3004,
                 "segmentation": 3007, "reports": 3008, "capabilities": 3009}
# Replicas, a command service that listens on a port, and the supervisor's /metrics. Nothing listens:
# the file only has to be read.
REPLICATED = """\
[supervisor]
metrics_port = 9464

[services.web]
port = 4100
replicas = 2

[services.budget]
port = 4110
replicas = 3

[services.worker]
command = ["python3", "-m", "http.server", "4200"]
port = 4200
health_path = "/"
"""


def tooloo(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("TOOLOO_", "_TOOLOO", "COMP_", "_TYPER"))} | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "tooloo_cli", *args], cwd=cwd, env=clean | (env or {}),
                          capture_output=True, text=True, encoding="utf-8", timeout=60)


def _one_clear_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def _replicated(tmp_path: Path) -> Path:
    path = tmp_path / "tooloo.toml"
    path.write_text(REPLICATED, encoding="utf-8")
    return path


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        unavailable("promtool is not on PATH: scripts/setup installs Debian's prometheus package (as root)")
    return found


def check_config(promtool: str, path: Path) -> None:
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def discovered(promtool: str, path: Path, job: str) -> list[dict[str, str]]:
    """The final labels of every target Prometheus finds for `job` in the file at `path`."""
    # Static targets are there at once; promtool still waits out its timeout, spinning a core.
    result = subprocess.run([promtool, "check", "service-discovery", "--timeout=500ms", str(path), job],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # In no particular order: promtool gathers the targets in a map.
    return sorted((target["labels"] for target in json.loads(result.stdout)), key=lambda labels: labels["instance"])


def jobs_prometheus_reads(promtool: str, path: Path) -> list[str]:
    """Every job in the file, as promtool lists them when asked for one it does not have."""
    result = subprocess.run([promtool, "check", "service-discovery", str(path), "no-such-job"],
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Select one of:" in output, output
    return [line.strip() for line in output.split("Select one of:", 1)[1].splitlines() if line.strip()]


# -- what the file declares -------------------------------------------------------------------------


def test_the_shipped_stack_gets_a_job_per_service_with_its_one_replica() -> None:
    config = PrometheusExporter().scrape_config(Declaration.of(load_config(SHIPPED, env={})))
    assert config["global"] == {"scrape_interval": "15s"}
    assert [job["job_name"] for job in config["scrape_configs"]] == list(BUILTIN_SERVICES)  # no supervisor: port 0
    for job in config["scrape_configs"]:
        name = job["job_name"]
        assert job["metrics_path"] == "/metrics"
        assert job["static_configs"] == [{"targets": [f"127.0.0.1:{SHIPPED_PORTS[name]}"],
                                          "labels": {"service": name, "replica": name}}]


def test_replicas_are_targets_and_a_command_service_is_left_out_as_prometheus_reads_it(
        tmp_path: Path, promtool: str) -> None:
    config = _replicated(tmp_path)
    result = tooloo(tmp_path, "--config", str(config), "export", "prometheus", "--out", "prometheus.yml")
    assert result.returncode == 0, result.stderr
    written = tmp_path / "prometheus.yml"
    check_config(promtool, written)
    assert jobs_prometheus_reads(promtool, written) == [*BUILTIN_SERVICES, "supervisor"]  # not the worker

    stack = stack_of(load_config(config, env={}))
    for service in ("web", "budget"):
        expected = [{"instance": f"127.0.0.1:{replica.port}", "job": service, "service": service,
                     "replica": replica.name} for replica in stack.specs[service].replicas]
        assert [target["replica"] for target in expected] == [f"{service}.{i}" for i in range(1, len(expected) + 1)]
        found = discovered(promtool, written, service)
        assert [{key: labels[key] for key in ("instance", "job", "service", "replica")} for labels in found] \
            == expected
        assert {labels["__metrics_path__"] for labels in found} == {"/metrics"}
        assert {labels["__scrape_interval__"] for labels in found} == {"15s"}
    # The supervisor's series carry service and replica labels of their own: its target has none.
    (supervisor,) = discovered(promtool, written, "supervisor")
    assert supervisor["instance"] == "127.0.0.1:9464" and "service" not in supervisor and "replica" not in supervisor


def test_the_shipped_stack_passes_promtool(tmp_path: Path, promtool: str) -> None:
    result = tooloo(tmp_path, "--config", str(SHIPPED), "export", "prometheus", "-o", "prometheus.yml")
    assert result.returncode == 0, result.stderr
    check_config(promtool, tmp_path / "prometheus.yml")


def test_python_callers_render_with_a_shorter_interval(tmp_path: Path, promtool: str) -> None:
    """What a test's own Prometheus uses: the first scrape comes within the interval."""
    loaded = load_config(_replicated(tmp_path), env={})
    path = tmp_path / "prometheus.yml"
    path.write_text(render("prometheus", loaded, scrape_interval="500ms"), encoding="utf-8")
    check_config(promtool, path)
    found = discovered(promtool, path, "training")
    assert [(labels["__scrape_interval__"], labels["__scrape_timeout__"]) for labels in found] == [("500ms", "500ms")]
    for wrong in ("0s", "15", "1.5s", "s", "1s1m"):
        with pytest.raises(UsageError, match="is not a Prometheus duration"):
            render("prometheus", loaded, scrape_interval=wrong)
    with pytest.raises(UsageError, match="the prometheus format has no option image; its options: scrape_interval"):
        render("prometheus", loaded, image="tooloo:1")


def test_strings_yaml_would_take_for_something_else_reach_prometheus_as_written(tmp_path: Path,
                                                                                promtool: str) -> None:
    values = ["on", "no", "1.0", "~", "null", "", 'a "quote" and a \\', "é\u2028tab\tnew\nline", "#", "- x", "{a}"]
    labels = {f"v{index}": value for index, value in enumerate(values)}
    path = tmp_path / "odd.yml"
    path.write_text(document({"scrape_configs": [{"job_name": "odd", "static_configs": [
        {"targets": ["127.0.0.1:9"], "labels": labels}]}]}, comments=["a comment", "with\na line break"]),
        encoding="utf-8")
    (found,) = discovered(promtool, path, "odd")
    # An empty label value is no label, as Prometheus has it.
    assert {key: found.get(key, "") for key in labels} == labels


def test_a_configuration_file_name_with_control_bytes_or_not_utf8_still_exports_valid_yaml(
        tmp_path: Path, promtool: str) -> None:
    """The file's name goes into the export's first comment: raw, an escape sequence would reach the
    terminal, and a byte that is not UTF-8 could not be written at all."""
    name = os.fsdecode(b"odd\x1b[31m\xff.toml")
    (tmp_path / name).write_text(REPLICATED, encoding="utf-8")
    printed = tooloo(tmp_path, "--config", str(tmp_path / name), "export", "prometheus")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("# Prometheus scrape configuration for the tooloo stack declared in "
                                     "odd\\u001b[31m\\udcff.toml.\n")
    written = tooloo(tmp_path, "--config", str(tmp_path / name), "export", "prometheus", "--out", "prometheus.yml")
    assert written.returncode == 0, written.stderr
    check_config(promtool, tmp_path / "prometheus.yml")


# -- the command line -------------------------------------------------------------------------------


def test_without_out_it_prints_what_render_makes_and_with_out_it_writes_it(tmp_path: Path) -> None:
    config = _replicated(tmp_path)
    expected = render("prometheus", load_config(config, env={}))
    printed = tooloo(tmp_path, "--config", str(config), "export", "prometheus")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == expected and printed.stderr == ""
    assert expected.startswith("# Prometheus scrape configuration for the tooloo stack declared in tooloo.toml.")

    (tmp_path / "deploy").mkdir()
    for out, where in (("one.yml", tmp_path / "one.yml"), ("deploy", tmp_path / "deploy" / "prometheus.yml")):
        result = tooloo(tmp_path, "--config", str(config), "export", "prometheus", "--out", out)
        assert result.returncode == 0, result.stderr
        assert where.read_text(encoding="utf-8") == expected
        assert result.stdout == f"wrote {where.relative_to(tmp_path)}\n"


def test_an_existing_file_is_kept_without_force_and_replaced_with_it(tmp_path: Path) -> None:
    target = tmp_path / "prometheus.yml"
    target.write_text("# mine\n", encoding="utf-8")
    refused = tooloo(tmp_path, "--config", str(SHIPPED), "export", "prometheus", "--out", "prometheus.yml")
    _one_clear_line(refused, 2, "prometheus.yml already exists", "--force")
    assert target.read_text(encoding="utf-8") == "# mine\n"
    forced = tooloo(tmp_path, "--config", str(SHIPPED), "export", "prometheus", "--out", "prometheus.yml", "--force")
    assert forced.returncode == 0, forced.stderr
    assert target.read_text(encoding="utf-8") == render("prometheus", load_config(SHIPPED, env={}))


def test_an_unknown_format_names_the_known_ones(tmp_path: Path) -> None:
    _one_clear_line(tooloo(tmp_path, "--config", str(SHIPPED), "export", "promethues"), 2,
                    "'promethues' is not an export format", "did you mean 'prometheus'?")
    _one_clear_line(tooloo(tmp_path, "--config", str(SHIPPED), "export", "nagios"), 2,
                    "the formats: compose, k8s, prometheus, systemd")
    _one_clear_line(tooloo(tmp_path, "--config", str(SHIPPED), "export"), 2, "Missing argument 'FORMAT'")


def test_a_place_that_cannot_take_the_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    for out, problem in (("missing/prometheus.yml", "missing is not a directory"),
                         ("a-file/prometheus.yml", "a-file is a file, not a directory")):
        _one_clear_line(tooloo(tmp_path, "--config", str(SHIPPED), "export", "prometheus", "--out", out), 2,
                        problem, "--out")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file"]


def test_a_configuration_that_cannot_run_is_refused_as_up_refuses_it(tmp_path: Path) -> None:
    config = tmp_path / "tooloo.toml"
    config.write_text("[services.training]\nport = 4300\nreplicas = 2\n", encoding="utf-8")
    result = tooloo(tmp_path, "--config", str(config), "export", "prometheus")
    _one_clear_line(result, 2, "services.training.replicas = 2", "runs as one process only")
    assert result.stdout == ""


def test_formats_complete_from_the_registered_exporters(tmp_path: Path) -> None:
    def complete(words: str) -> list[str]:
        result = tooloo(tmp_path, env={"_TOOLOO_COMPLETE": "complete_bash", "COMP_WORDS": words,
                                       "COMP_CWORD": str(len(words.split(" ")) - 1)})
        return result.stdout.split()

    assert complete("tooloo export ") == formats() == ["compose", "k8s", "prometheus", "systemd"]
    assert complete("tooloo export pro") == ["prometheus"]
    assert complete("tooloo export k") == ["k8s"]
    assert complete("tooloo export x") == []


def test_the_readmes_export_commands_work(tmp_path: Path, promtool: str) -> None:
    """The README's Export block, but for starting the Prometheus server (a test of the stack does that)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("\n## Export\n", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    export, serve = block.splitlines()[0].split(" && ")
    assert serve == "prometheus --config.file=prometheus.yml"
    assert export.split()[:1] == ["tooloo"]
    result = tooloo(tmp_path, "--config", str(SHIPPED), *export.split()[1:])
    assert result.returncode == 0, result.stderr
    assert block.splitlines()[1] == "promtool check config prometheus.yml"
    check_config(promtool, tmp_path / "prometheus.yml")


def _readme_block(section: str) -> list[str]:
    """The command lines of the README's `### section` under Export."""
    export = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## Export\n", 1)[1].split("\n## ", 1)[0]
    return export.split(f"\n### {section}\n", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0].splitlines()


@pytest.mark.parametrize(("section", "needed"), [
    ("Kubernetes", ["Dockerfile", "00-config.yaml", "budget.yaml"]),
    ("docker compose", ["Dockerfile", "compose.yaml", "containers.toml"]),
    ("systemd", ["tooloo.target", "tooloo-budget.service"]),
])
def test_the_readmes_commands_for_each_engine_export_what_the_next_commands_use(
        tmp_path: Path, section: str, needed: list[str]) -> None:
    """The first line's export, run as written (the systemd one into a home of the test's own); the
    engine's commands (docker, kubectl, systemctl) are not run here, but what they read must be there."""
    first, *rest = _readme_block(section)
    home = tmp_path / "home"
    home.mkdir()
    steps = first.replace("~/", f"{home}/").split(" && ")
    for step in steps:
        words = step.split()
        if words[:2] == ["mkdir", "-p"]:
            Path(words[2]).mkdir(parents=True)
        elif words[0] == "tooloo":
            result = tooloo(tmp_path, "--config", str(SHIPPED), *words[1:])
            assert result.returncode == 0, result.stderr
            out = Path(words[words.index("--out") + 1])
            out = out if out.is_absolute() else tmp_path / out
    assert sorted(set(needed) - {path.name for path in out.iterdir()}) == [], sorted(path.name for path in out.iterdir())
    commands = " ".join(step for step in steps if not step.startswith(("tooloo ", "mkdir "))).split() + \
        " ".join(rest).split()
    # Every file or directory the engine's commands name is what the export wrote.
    for word in commands:
        if word.startswith(("deploy/", "~/.config/systemd/")):
            named = tmp_path / word if word.startswith("deploy/") else home / word.removeprefix("~/")
            assert named.exists(), word
    for line in rest:  # the Secret the README makes is the one the manifests reference, with the key they read
        if line.startswith("kubectl create secret generic "):
            name, literal = line.split()[4:6]
            key = literal.removeprefix("--from-literal=").split("=", 1)[0]
            manifest = (out / "budget.yaml").read_text(encoding="utf-8")
            assert f'name: "{name}"' in manifest and f'key: "{key}"' in manifest, manifest


# -- the room, for the exporters to come --------------------------------------------------------------


def test_the_registry_gives_the_exporter_its_entry_point_names() -> None:
    chosen = exporter("prometheus")
    assert isinstance(chosen, PrometheusExporter)
    files = chosen.render(Declaration.of(load_config(SHIPPED, env={})))
    assert [file.name for file in files] == ["prometheus.yml"] and chosen.to_stdout(files) == files[0].content


def test_several_files_go_into_a_directory_made_for_them_and_none_is_overwritten_without_force(
        tmp_path: Path) -> None:
    files = [File("web.service", "[Unit]\n"), File("tooloo.target", "[Unit]\n")]
    out = tmp_path / "units"
    assert write(files, out) == [out / "web.service", out / "tooloo.target"]
    (out / "web.service").write_text("# edited\n", encoding="utf-8")
    (out / "tooloo.target").unlink()
    with pytest.raises(OutputRefused, match="web.service already exists; add --force"):
        write(files, out)
    assert not (out / "tooloo.target").exists()  # refused before anything was written
    write(files, out, force=True)
    assert (out / "web.service").read_text(encoding="utf-8") == "[Unit]\n"
    with pytest.raises(OutputRefused, match="is not a directory"):
        write(files, tmp_path / "no" / "units")
    assert to_stdout(files) == "# ==> web.service <==\n[Unit]\n\n# ==> tooloo.target <==\n[Unit]\n"
    with pytest.raises(ValueError):
        File("../escape", "")
