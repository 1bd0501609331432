"""`tooloo bench startup`'s honcho comparison and command figures: the Procfile is the stack model's,
a missing honcho is a missing figure, and a real run leaves no process behind."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from tooloo_cli.bench import startup
from tooloo_cli.bench.stack import clean_env, write_ephemeral_config
from tooloo_cli.config import Config, load_config
from tooloo_cli.stack import stack_of
from tooloo_cli.supervisor.environment import handover, service_environment
from tooloo_cli.supervisor.standby import supervisor_environment


def _two_budgets(config: Config) -> None:
    config.services["budget"].replicas = 2
    config.services["segmentation"].env = {"FLAVOUR": "it's \"quoted\" $HOME"}


def test_the_procfile_runs_what_the_supervisor_would_run(tmp_path: Path) -> None:
    config = write_ephemeral_config(tmp_path, _two_budgets)
    env = clean_env() | {"OPENAI_API_KEY": "sk-x", "TOOLOO_SERVICES__WEB__PORT": "1"}
    loaded = load_config(config, env=env)
    stack = stack_of(loaded)
    lines = startup.procfile(config, env).splitlines()
    replicas = stack.replicas()
    assert len(lines) == len(replicas) == 9
    for line, replica in zip(lines, replicas):
        label, _, command = line.partition(": ")
        spec = stack.specs[replica.service]
        words = shlex.split(command)
        assert label == replica.name.replace(".", "_")
        assert words[:4] == ["cd", str(spec.cwd), "&&", "exec"] and words[4:6] == ["env", "-i"]
        argv = list(spec.argv(replica))
        assert words[-len(argv):] == argv
        given = dict(word.split("=", 1) for word in words[6:-len(argv)])
        expected = service_environment(spec, supervisor_environment(env), handover(loaded, env)["environment"])
        assert given == expected, replica.name
    assert "OPENAI_API_KEY=sk-x" in shlex.split(lines[3]) and "OPENAI_API_KEY=sk-x" in shlex.split(lines[4])
    assert all("OPENAI_API_KEY" not in line for line in lines if not line.startswith("budget_"))  # budget's alone


def test_without_honcho_its_figures_are_missing_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(startup, "honcho_command", lambda: "honcho is not installed (pip install 'tooloo[bench]')")
    results = startup.run_startup_benchmarks(rounds=1)
    figures = results.figures
    assert not set(startup.HONCHO_FIGURES) & set(figures)
    assert results.missing == {figure: "honcho is not installed (pip install 'tooloo[bench]')"
                               for figure in startup.HONCHO_FIGURES}
    assert figures["orphans"] == 0 and 0 < figures["downPortsFreeSeconds"] <= figures["downSeconds"]
    assert figures["observeSeconds"] > 0 and figures["statusSeconds"] > 0
    console = Console(record=True, width=140, color_system=None)
    from tooloo_cli.bench.report import print_startup_table

    print_startup_table(results, console=console)
    text = console.export_text()
    assert "up / honcho's" in text and "missing" in text and "honcho is not installed" in text


@pytest.mark.skipif(not isinstance(startup.honcho_command(), list), reason="honcho is not installed")
def test_a_real_comparison_with_honcho_leaves_nothing_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLOO_")}
    result = subprocess.run([sys.executable, "-m", "tooloo_cli", "bench", "startup", "--quick", "--json"],
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)["startup"]
    figures = document["figures"]
    assert document["missing"] == {}, document["missing"]
    for key in startup.HONCHO_FIGURES:
        assert figures[key] > 0, key
    assert figures["honchoPortsFreeSeconds"] <= figures["honchoDownSeconds"]
    assert document["targets"]["upVsHoncho"] == document["targets"]["downVsHoncho"] == 1.0
    left = [p for p in psutil.process_iter(["cmdline", "status"])
            if "tooloo-bench-startup-" in " ".join(p.info["cmdline"] or [])
            and p.info["status"] != psutil.STATUS_ZOMBIE]
    assert left == []  # neither honcho nor a service of its, nor one of tooloo's
