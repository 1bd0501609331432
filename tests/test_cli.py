"""Tests of the `tooloo` command line, run as a real subprocess (`python -m tooloo_cli`).

Each command runs in a temporary directory with the environment of the test run minus
every TOOLOO_* variable (and minus colour forcing), so that neither a stray override nor
a tooloo.toml of the developer changes the outcome.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Tooloo

from tooloo_cli import __version__
from tooloo_cli.config import Config, config_to_toml

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOUR_ENV = ("NO_COLOR", "FORCE_COLOR", "CLICOLOR_FORCE", "PY_COLORS", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


# -- helpers --------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without TOOLOO_* or colour variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLOO_") and k not in COLOUR_ENV}
    env["COLUMNS"] = "100"
    env.update(extra)
    return env


def tooloo(cwd: Path, *args: str, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs `python -m tooloo_cli ARGS` in `cwd` and returns the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "tooloo_cli", *args],
        cwd=cwd,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )


def strict_json(text: str) -> object:
    """Parses JSON, refusing the non-standard NaN and Infinity that json.loads accepts."""

    def refuse(constant: str) -> object:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def has_no_tooloo_toml_above(directory: Path) -> bool:
    """True when neither `directory` nor any of its parents holds a tooloo.toml."""
    resolved = directory.resolve()
    return not any((d / "tooloo.toml").is_file() for d in (resolved, *resolved.parents))


# -- version and help ---------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_fast_path_prints_the_version(tmp_path: Path, flag: str) -> None:
    result = tooloo(tmp_path, flag)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"tooloo {__version__}\n"
    assert result.stderr == ""


def test_version_fast_path_does_not_import_typer(tmp_path: Path) -> None:
    code = (
        "import sys; sys.argv = ['tooloo', '--version'];"
        "from tooloo_cli.__main__ import main; main();"
        "print('typer' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"tooloo {__version__}", "False"]


def test_version_through_typer_with_a_config_option(tmp_path: Path) -> None:
    result = tooloo(tmp_path, "-c", "x.toml", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"tooloo {__version__}"


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = tooloo(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    for command in ("config", "test", "bench"):
        assert re.search(rf"\b{command}\b", result.stdout), command


def test_config_help_lists_its_subcommands(tmp_path: Path) -> None:
    result = tooloo(tmp_path, "config", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("show", "init", "validate"):
        assert command in result.stdout


# -- config init / validate ----------------------------------------------------------------


def test_config_init_writes_a_file_that_validate_accepts(tmp_path: Path) -> None:
    init = tooloo(tmp_path, "config", "init")
    assert init.returncode == 0, init.stderr
    written = tmp_path / "tooloo.toml"
    assert written.read_text(encoding="utf-8") == config_to_toml(Config.defaults())

    validate = tooloo(tmp_path, "config", "validate")
    assert validate.returncode == 0, validate.stderr
    assert "valid" in validate.stdout
    assert "8 services" in validate.stdout


def test_config_init_writes_to_a_given_path_creating_directories(tmp_path: Path) -> None:
    init = tooloo(tmp_path, "config", "init", "ops/nested/tooloo.toml")
    assert init.returncode == 0, init.stderr
    target = tmp_path / "ops" / "nested" / "tooloo.toml"
    assert target.is_file()
    validate = tooloo(tmp_path, "--config", str(target), "config", "validate")
    assert validate.returncode == 0, validate.stderr


def test_second_config_init_refuses_and_leaves_the_file(tmp_path: Path) -> None:
    target = tmp_path / "tooloo.toml"
    target.write_text("# mine\n", encoding="utf-8")
    result = tooloo(tmp_path, "config", "init")
    assert result.returncode == 1
    assert "already exists" in result.stderr
    assert "--force" in result.stderr
    assert target.read_text(encoding="utf-8") == "# mine\n"


def test_config_init_force_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "tooloo.toml"
    target.write_text("# mine\n", encoding="utf-8")
    result = tooloo(tmp_path, "config", "init", "--force")
    assert result.returncode == 0, result.stderr
    assert target.read_text(encoding="utf-8") == config_to_toml(Config.defaults())


def test_validate_without_a_file_accepts_the_defaults(tmp_path: Path) -> None:
    if not has_no_tooloo_toml_above(tmp_path):
        pytest.skip("a tooloo.toml above the temporary directory would be discovered")
    result = tooloo(tmp_path, "config", "validate")
    assert result.returncode == 0, result.stderr
    assert "built-in defaults" in result.stdout


# -- config show ----------------------------------------------------------------------------


def test_config_show_prints_toml_naming_its_source(tmp_path: Path) -> None:
    (tmp_path / "tooloo.toml").write_text("[services.web]\nport = 18000\n", encoding="utf-8")
    result = tooloo(tmp_path, "config", "show")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("# source:")
    assert "tooloo.toml" in first
    assert "[services.web]\nport = 18000\n" in result.stdout
    import tomllib

    data = tomllib.loads(result.stdout)
    assert data["services"]["budget"]["port"] == 3003


def test_config_show_without_a_file_names_the_built_in_defaults(tmp_path: Path) -> None:
    if not has_no_tooloo_toml_above(tmp_path):
        pytest.skip("a tooloo.toml above the temporary directory would be discovered")
    result = tooloo(tmp_path, "config", "show")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# source: built-in defaults")


def test_config_show_json_is_valid_json(tmp_path: Path) -> None:
    result = tooloo(tmp_path, "config", "show", "--json")
    assert result.returncode == 0, result.stderr
    data = strict_json(result.stdout)
    assert isinstance(data, dict)
    assert data["services"]["budget"]["port"] == 3003
    assert set(data["services"]) == set(Config.defaults().services)


def test_config_show_reflects_an_env_override(tmp_path: Path) -> None:
    variable = "TOOLOO_SERVICES__BUDGET__CACHE__TTL_SECONDS"
    env = clean_env(**{variable: "12"})
    toml_out = tooloo(tmp_path, "config", "show", env=env)
    assert toml_out.returncode == 0, toml_out.stderr
    comment = next(line for line in toml_out.stdout.splitlines() if line.startswith("# overridden by:"))
    assert variable in comment
    import tomllib

    assert tomllib.loads(toml_out.stdout)["services"]["budget"]["cache"]["ttl_seconds"] == 12.0

    json_out = tooloo(tmp_path, "config", "show", "--json", env=env)
    assert json_out.returncode == 0, json_out.stderr
    assert strict_json(json_out.stdout)["services"]["budget"]["cache"]["ttl_seconds"] == 12.0  # type: ignore[index]


def test_config_show_has_no_overridden_comment_without_overrides(tmp_path: Path) -> None:
    result = tooloo(tmp_path, "config", "show")
    assert result.returncode == 0, result.stderr
    assert "# overridden by" not in result.stdout


def test_validate_mentions_applied_overrides(tmp_path: Path) -> None:
    variable = "TOOLOO_SERVICES__WEB__PORT"
    result = tooloo(tmp_path, "config", "validate", env=clean_env(**{variable: "18000"}))
    assert result.returncode == 0, result.stderr
    assert variable in result.stdout


def test_tooloo_config_variable_selects_the_file(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "custom.toml"
    other.parent.mkdir()
    other.write_text("[services.web]\nport = 18001\n", encoding="utf-8")
    result = tooloo(tmp_path, "config", "show", "--json", env=clean_env(TOOLOO_CONFIG=str(other)))
    assert result.returncode == 0, result.stderr
    assert strict_json(result.stdout)["services"]["web"]["port"] == 18001  # type: ignore[index]


# -- errors -----------------------------------------------------------------------------------


def test_validate_of_a_broken_file_exits_2_naming_file_line_and_key(tmp_path: Path) -> None:
    broken = tmp_path / "tooloo.toml"
    broken.write_text('[stack]\nhost = "127.0.0.1"\n\n[services.budget]\nport = "abc"\n', encoding="utf-8")
    result = tooloo(tmp_path, "config", "validate")
    assert result.returncode == 2
    assert "tooloo.toml" in result.stderr
    assert "line 5" in result.stderr
    assert "services.budget.port" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout


def test_validate_of_invalid_toml_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "bad.toml"
    broken.write_text("[stack]\nhost = \n", encoding="utf-8")
    result = tooloo(tmp_path, "--config", "bad.toml", "config", "validate")
    assert result.returncode == 2
    assert "bad.toml" in result.stderr
    assert "line 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_env_override_exits_2_naming_the_variable(tmp_path: Path) -> None:
    variable = "TOOLOO_SERVICES__BUDGET__PORT"
    result = tooloo(tmp_path, "config", "show", env=clean_env(**{variable: "abc"}))
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    result = tooloo(tmp_path, "--config", "missing.toml", "config", "show")
    assert result.returncode == 2
    assert "missing.toml" in result.stderr
    assert "no such configuration file" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [["--bogus"], ["frobnicate"], ["config", "frob"], ["config", "show", "--nope"], ["bench", "nosuchsuite"]],
    ids=["unknown-option", "unknown-command", "unknown-subcommand", "unknown-subcommand-option", "bad-choice"],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = tooloo(tmp_path, *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


# -- bench --------------------------------------------------------------------------------------


EXPECTED_BENCHMARKS = (
    "cache set",
    "cache get (memory hit)",
    "rate-limit check",
    "span start+end",
    "breaker overhead",
    "singleflight (per caller)",
)


def test_bench_modules_quick_json_lists_results(tmp_path: Path) -> None:
    result = tooloo(tmp_path, "bench", "modules", "--quick", "--json")
    assert result.returncode == 0, result.stderr
    document = strict_json(result.stdout)
    assert isinstance(document, dict)
    assert document["quick"] is True
    results = {entry["name"]: entry for entry in document["modules"]}
    for name in EXPECTED_BENCHMARKS:
        assert name in results, name
    for name, entry in results.items():
        for key in ("usPerOp", "opsPerSec"):
            value = entry[key]
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (name, key, value)
            assert value > 0, (name, key, value)
    assert results["cache set"]["seedUs"] == 119
    assert results["cache get (memory hit)"]["seedUs"] == 1
    assert results["rate-limit check"]["seedUs"] == 2


def test_bench_modules_quick_table_mentions_cache_set(tmp_path: Path) -> None:
    result = tooloo(tmp_path, "bench", "modules", "--quick")
    assert result.returncode == 0, result.stderr
    assert "cache set" in result.stdout
    assert "µs/op" in result.stdout


# -- colour -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["--help"], ["config", "--help"], ["bench", "modules", "--quick"], ["--bogus"], ["config", "show"]],
    ids=["help", "config-help", "bench-table", "usage-error", "config-show"],
)
def test_no_color_output_has_no_ansi_escapes(tmp_path: Path, args: list[str]) -> None:
    result = tooloo(tmp_path, *args, env=clean_env(NO_COLOR="1"))
    assert result.returncode in (0, 2)
    assert not ANSI_ESCAPE.search(result.stdout), result.stdout
    assert not ANSI_ESCAPE.search(result.stderr), result.stderr
    assert "\x1b" not in result.stdout + result.stderr


def _run_in_pty(cwd: Path, args: list[str], env: dict[str, str]) -> bytes:
    """Runs the CLI with a pseudo-terminal as stdout and stderr; returns everything written."""
    import pty

    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "tooloo_cli", *args], cwd=cwd, env=env,
                               stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    try:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO once the child has closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        process.wait(timeout=30)
    return output


def _colour_codes(output: bytes) -> list[bytes]:
    """The SGR sequences in `output` that set a foreground or background colour."""
    colours = []
    for match in re.finditer(rb"\x1b\[([0-9;]*)m", output):
        params = [int(p) for p in match.group(1).split(b";") if p]
        if any(30 <= p <= 49 or 90 <= p <= 107 for p in params):
            colours.append(match.group(0))
    return colours


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_no_color_on_a_terminal_removes_colour(tmp_path: Path) -> None:
    env = clean_env(TERM="xterm-256color")
    coloured = _run_in_pty(tmp_path, ["--help"], env)
    assert _colour_codes(coloured), "expected colour on a terminal without NO_COLOR"
    plain = _run_in_pty(tmp_path, ["--help"], {**env, "NO_COLOR": "1"})
    assert b"config" in plain
    assert _colour_codes(plain) == []


@pytest.mark.parametrize("command", ["up", "down", "start", "stop", "status", "restart", "kill", "logs", "ls", "observe",
                                     "top", "serve", "test", "bench",
                                     "config show", "config init", "config validate"])
def test_every_command_help_has_an_example(tmp_path: Path, command: str) -> None:
    result = tooloo(tmp_path, *command.split(), "--help")
    assert result.returncode == 0 and "Example" in result.stdout


def test_help_groups_the_commands(tmp_path: Path) -> None:
    result = tooloo(tmp_path, "--help")
    for panel in ("The stack", "Quality", "Configuration"):
        assert panel in result.stdout


# -- ordinary problems get one clear line, never a traceback ---------------------------------------------


def _one_clear_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def _stack_file(directory: Path, edit: Any = None) -> Path:
    from tooloo_cli.bench.stack import write_ephemeral_config

    return write_ephemeral_config(directory, edit)


def test_a_state_directory_that_is_a_file_is_named(tmp_path: Path) -> None:
    def state_in_a_file(config: Config) -> None:
        config.stack.state_dir = "not-a-directory"

    config = _stack_file(tmp_path, state_in_a_file)
    (tmp_path / "not-a-directory").write_text("a file")
    for command in (["up", "training"], ["status"], ["down"]):
        _one_clear_line(tooloo(tmp_path, "--config", str(config), *command), 1, "not-a-directory is a file")


def test_a_read_only_state_directory_is_named(tmp_path: Path) -> None:
    from conftest import need_root

    need_root("a read-only filesystem")
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(state)], check=True)
    try:
        def read_only_state(config: Config) -> None:
            config.stack.state_dir = str(state)

        result = tooloo(tmp_path, "--config", str(_stack_file(tmp_path, read_only_state)), "up", "training")
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
    _one_clear_line(result, 1, "not writable")


def test_absurd_line_counts_are_a_usage_error(tmp_path: Path) -> None:
    result = tooloo(tmp_path, "--config", str(_stack_file(tmp_path)), "logs", "-n", "99999999999999999999999")
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize("target", ["missing-directory/base.json", "."])
def test_bench_save_to_a_bad_path_is_refused_before_measuring(tmp_path: Path, target: str) -> None:
    started = time.monotonic()
    result = tooloo(tmp_path, "bench", "modules", "--save", target)
    assert result.returncode == 2 and "--save" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 10  # before: found only after the whole run


def test_config_init_to_a_path_that_cannot_exist_is_one_line(tmp_path: Path) -> None:
    _one_clear_line(tooloo(tmp_path, "config", "init", "/dev/null/tooloo.toml"), 1, "cannot write /dev/null/tooloo.toml")


@pytest.mark.parametrize("command", [["config", "show"], ["status"], ["--help"]])
def test_output_to_a_full_device_is_one_line(tmp_path: Path, command: list[str]) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "tooloo_cli", "--config", str(_stack_file(tmp_path)),
                                 *command], cwd=tmp_path, env=clean_env(), stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=60)
    assert result.returncode == 1 and "cannot write the output" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


@pytest.fixture
def running(tooloo: Callable[..., Tooloo]) -> Callable[..., Tooloo]:
    """conftest's runner of a private stack (named apart from this module's `tooloo` helper)."""
    return tooloo


def test_an_ascii_terminal_gets_replacements_not_a_traceback(running: Callable[..., Tooloo]) -> None:
    t = running()
    assert t("up", "training").returncode == 0
    t.env["PYTHONIOENCODING"] = "ascii"
    result = t("status")
    assert result.returncode == 0, result.stderr
    assert "running" in result.stdout and "Traceback" not in result.stderr


def test_status_as_another_user_names_the_owner(tmp_path: Path) -> None:
    from conftest import need_root

    need_root("switching to another user")
    shared = Path(tempfile.mkdtemp(prefix="tooloo-shared-"))
    try:
        shared.chmod(0o755)
        config = _stack_file(shared)
        config.chmod(0o644)
        (shared / ".tooloo").mkdir(mode=0o700)
        result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                 "-m", "tooloo_cli", "--config", str(config), "status"], cwd=shared,
                                env=clean_env(HOME=str(shared)), capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(shared)
    _one_clear_line(result, 1, "cannot be read", "belongs to root")


def test_a_broken_tooloo_toml_does_not_lock_anyone_out_of_the_running_stack(running: Callable[..., Tooloo]) -> None:
    t = running()
    assert t("up", "training").returncode == 0
    good = t.config.read_text()
    t.config.write_text(good.replace("[services.web]", "[services.web"))  # a typo after the stack started
    status = t("status")
    logs = t("logs", "training", "-n", "3")
    down = t("down")
    assert status.returncode == 0 and "running" in status.stdout and "warning" in status.stderr
    assert logs.returncode == 0 and "training |" in logs.stdout
    assert down.returncode == 0 and "stopped training" in down.stdout
    assert "Traceback" not in status.stderr + logs.stderr + down.stderr


def test_serve_on_a_taken_port_names_the_holder_and_never_says_listening(tmp_path: Path) -> None:
    config = _stack_file(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = tooloo(tmp_path, "--config", str(config), "serve", "web", "--port", str(port))
    _one_clear_line(result, 1, f"port {port} on 127.0.0.1 is taken by pid {os.getpid()}")
    assert "listening" not in result.stdout  # before: "listening", then a raw uvicorn error, exit 3


@pytest.mark.parametrize("interval", ["nan", "inf", "-inf", "0", "0.05", "3601"])
def test_observe_refuses_an_interval_observe_interval_could_not_be(tmp_path: Path, interval: str) -> None:
    result = tooloo(tmp_path, "observe", "--watch", "--interval", interval, timeout=20)
    assert result.returncode == 2, result.stdout
    assert "--interval" in result.stderr and "from 0.1 to 3600" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("command", [["status"], ["down"], ["restart", "web"]])
def test_from_a_directory_without_tooloo_toml_nothing_running_says_why(tmp_path: Path, command: list[str]) -> None:
    if not has_no_tooloo_toml_above(tmp_path):
        pytest.skip("a tooloo.toml above the temporary directory would be found")
    result = tooloo(tmp_path, *command)
    said = result.stdout + result.stderr
    assert result.returncode == (1 if command[0] == "restart" else 0), said
    assert f"no tooloo.toml in {tmp_path.resolve()} or above it" in " ".join(said.split())
    assert "Traceback" not in said


def test_with_a_tooloo_toml_nothing_running_says_only_that(tmp_path: Path) -> None:
    (tmp_path / "tooloo.toml").write_text("")
    result = tooloo(tmp_path, "down")
    assert result.returncode == 0 and result.stdout == "nothing is running\n"


def _line_within(process: subprocess.Popen[str], seconds: float) -> str:
    """The next line `process` prints, or a failure after `seconds` (its finalizer then kills it, ending the read)."""
    from concurrent.futures import ThreadPoolExecutor, TimeoutError as Late

    with ThreadPoolExecutor(1) as reader:
        line = reader.submit(process.stdout.readline)  # type: ignore[union-attr]
        try:
            return line.result(timeout=seconds)
        except Late:
            process.kill()  # so that the reading thread, which the pool waits for, ends
            pytest.fail(f"no line within {seconds} s")


def test_ctrl_c_ends_logs_follow_with_130(tmp_path: Path) -> None:
    (tmp_path / "tooloo.toml").write_text("")
    (tmp_path / ".tooloo" / "logs").mkdir(parents=True)
    (tmp_path / ".tooloo" / "logs" / "web.log").write_text("GET /api/v1/x 200 1.0ms -\n")
    process = subprocess.Popen([sys.executable, "-m", "tooloo_cli", "logs", "web", "-f"], cwd=tmp_path,
                               env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "GET /api/v1/x" in _line_within(process, 20)  # following now
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130 and "Traceback" not in stderr


def test_the_help_s_test_example_selects_checks(tmp_path: Path) -> None:
    keyword = re.search(r"tooloo test -k (\S+)", tooloo(tmp_path, "test", "--help").stdout).group(1)
    result = tooloo(tmp_path, "test", "-k", keyword, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert int(re.search(r"(\d+) passed, 0 failed", result.stdout).group(1)) > 0


def test_logs_takes_several_names_and_leaves_the_others_out(tmp_path: Path) -> None:
    (tmp_path / "tooloo.toml").write_text("")
    logs = tmp_path / ".tooloo" / "logs"
    logs.mkdir(parents=True)
    for name in ("web", "budget", "coach"):
        (logs / f"{name}.log").write_text(f"GET /api/v1/{name} 200 1.0ms -\n")
    result = tooloo(tmp_path, "logs", "web", "budget")
    assert result.returncode == 0, result.stderr
    assert "web    | GET /api/v1/web" in result.stdout and "budget | GET /api/v1/budget" in result.stdout
    assert "coach" not in result.stdout
    mistyped = tooloo(tmp_path, "logs", "web", "bugdet")
    assert mistyped.returncode == 2 and "did you mean 'budget'?" in mistyped.stderr


def test_logs_follows_a_named_service_whose_log_appears_later(tmp_path: Path) -> None:
    (tmp_path / "tooloo.toml").write_text("")
    logs = tmp_path / ".tooloo" / "logs"
    logs.mkdir(parents=True)
    (logs / "web.log").write_text("GET /api/v1/web 200 1.0ms -\n")
    process = subprocess.Popen([sys.executable, "-m", "tooloo_cli", "logs", "web", "budget", "-f"], cwd=tmp_path,
                               env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "GET /api/v1/web" in _line_within(process, 20)
        (logs / "budget.log").write_text("GET /api/v1/budget 200 1.0ms -\n")  # budget starts after the command
        assert _line_within(process, 10).startswith("budget | GET /api/v1/budget")
    finally:
        process.kill()
        process.communicate(timeout=20)


def test_logs_under_a_broken_configuration_shows_a_service_only_it_knew(tmp_path: Path) -> None:
    (tmp_path / "tooloo.toml").write_text("[services.worker\n")  # not TOML: the built-in defaults are used
    logs = tmp_path / ".tooloo" / "logs"
    logs.mkdir(parents=True)
    (logs / "worker.log").write_text("worker says hello\n")
    (logs / "web.log").write_text("GET /api/v1/web 200 1.0ms -\n")
    result = tooloo(tmp_path, "logs", "worker")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "worker | worker says hello\n"
    both = tooloo(tmp_path, "logs", "web", "worker", "ghost")
    assert both.returncode == 0 and "worker says hello" in both.stdout and "GET /api/v1/web" in both.stdout
    assert "Traceback" not in both.stderr and "internal error" not in both.stderr


def test_nothing_running_names_a_directory_as_it_is(tmp_path: Path) -> None:
    odd = tmp_path / "[bold]stack[red]"
    odd.mkdir()
    if not has_no_tooloo_toml_above(odd):
        pytest.skip("a tooloo.toml above the temporary directory would be found")
    for command in (["down"], ["status"]):
        result = tooloo(odd, *command)
        assert str(odd.resolve()) in "".join(result.stdout.split("\n")), result.stdout
