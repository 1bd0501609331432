"""`tooloo export systemd`, checked by systemd's own code: `systemd-analyze verify`, and systemd reading the units.

Three of systemd's programs judge what the command writes, offline (systemd need not be PID 1):

- `systemd-analyze verify` loads every unit as the system manager and as a user's would. It
  exits 0 over settings it ignores ("Unknown key", "Failed to parse"), so anything it says
  fails the check, and a broken unit is shown to fail it.
- `systemd --test --user` (as a user other than root: it will not run as root) dumps the units as the
  manager parsed them: the ExecStart argv, Environment, dependencies, timeouts. The test reads
  that back against `stack_of`: what `up` would start is what systemd would.
- systemd's environment.d generator reads a file with systemd's env-file parser: the oracle for
  how EnvironmentFile= reads an env_file (the export refuses one it would read otherwise).

The command runs as a real subprocess (test_export.py's `tooloo`: --config, no TOOLOO_* variable).
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import unavailable
from test_export import SHIPPED, _one_clear_line, tooloo

from tooloo_cli.bench.stack import end_process, write_ephemeral_config
from tooloo_cli.config import BUILTIN_SERVICES, ConfigError, load_config
from tooloo_cli.export import render
from tooloo_cli.export.systemd import systemd_env_file
from tooloo_cli.stack import Probe, ServiceSpec, read_env_file, stack_of

# Replicas (budget beside its state; coach leading over Redis), dependencies on a command of the user's
# own and on replicas, redis_url, a grace period of 0, and values and paths systemd would otherwise read
# as quotes, specifiers, variables or separators. Nothing is started: the units are only read.
RICH = """\
[stack]
redis_url = "redis://127.0.0.1:6390/0"

[services.queue]
command = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "4200"]
port = 4200
health_path = "/"
restart = "on-failure"

[services.budget]
port = 4110
replicas = 2
depends_on = ["queue"]
env_file = "budget.env"
env = { REGION = "eu west", ODD = 'a "quote", 100% of $HOME \\\\ back; semi', ACCENT = "é", EMPTY = "" }

[services.coach]
port = 4120
replicas = 2

[services.web]
port = 4100
depends_on = ["budget", "coach"]
grace_period = 0
"""
ENV_FILE = "PLAIN=value\nQUOTED=\"two words\"\nSINGLE='a # b $HOME'\n"
SECRET = "sk-test-not-a-real-key"
SYSTEMD = ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
GENERATOR = "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator"
Units = dict[str, dict[str, list[str]]]  # per unit, each setting's values as systemd's dump gives them


@pytest.fixture
def systemd_analyze() -> str:
    return shutil.which("systemd-analyze") or unavailable(
        "systemd-analyze is not on PATH: scripts/setup installs Debian's systemd package (as root)")


def rich_stack(tmp_path: Path) -> Path:
    """RICH in a directory whose name holds a space and a `%`, beside its env_file."""
    directory = tmp_path / "my stack %i"
    directory.mkdir()
    (directory / "budget.env").write_text(ENV_FILE, encoding="utf-8")
    config = directory / "tooloo.toml"
    config.write_text(RICH, encoding="utf-8")
    return config


def export(tmp_path: Path, config: Path, *args: str) -> Path:
    out = tmp_path / "units"
    result = tooloo(tmp_path, "--config", str(config), "export", "systemd", "--out", str(out), *args)
    assert result.returncode == 0, result.stderr
    return out


def verify(systemd_analyze: str, directory: Path, *, user: bool) -> str:
    """What `systemd-analyze verify` says of every file in `directory` (nothing, for units that pass)."""
    with tempfile.TemporaryDirectory(prefix="tooloo-runtime-") as runtime:  # a user manager needs one
        result = subprocess.run([systemd_analyze, "verify", "--man=no", *(["--user"] if user else []),
                                 *sorted(str(path) for path in directory.iterdir())],
                                capture_output=True, text=True, timeout=60,
                                env={**os.environ, "XDG_RUNTIME_DIR": runtime, "SYSTEMD_LOG_COLOR": "0"})
    return (result.stdout + result.stderr).strip() or ("" if result.returncode == 0 else f"exit {result.returncode}")


@pytest.fixture
def systemd_reads() -> Iterator[Callable[[Path], Units]]:
    """Reads `directory`'s units as systemd's user manager parses them (`systemd --test --user`)."""
    program = next((path for path in SYSTEMD if os.access(path, os.X_OK)), None)
    if program is None:
        unavailable(f"systemd is not installed ({' or '.join(SYSTEMD)}): scripts/setup installs Debian's systemd")
    made: list[Path] = []

    def read(directory: Path) -> Units:
        # Its own world-readable copy: systemd --test will not run as root, and tmp_path is root's alone.
        copy = Path(tempfile.mkdtemp(prefix="tooloo-units-"))
        made.append(copy)
        for path in directory.iterdir():
            shutil.copy(path, copy / path.name)
            (copy / path.name).chmod(0o644)
        copy.chmod(0o755)
        command = [program, "--test", "--user", "--unit=tooloo.target", "--log-target=console"]
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(copy, nobody.pw_uid, nobody.pw_gid)  # its $HOME and $XDG_RUNTIME_DIR: written to
            command = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=copy, env={
            "PATH": os.environ["PATH"], "HOME": str(copy), "XDG_RUNTIME_DIR": str(copy),
            "SYSTEMD_UNIT_PATH": f"{copy}:"})
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr
        return dump_of(result.stdout)

    yield read
    for copy in made:
        shutil.rmtree(copy)


def dump_of(text: str) -> Units:
    """The tooloo units of a `systemd --test` dump: per unit, each setting's values (commands as argv)."""
    units: Units = {}
    current: dict[str, list[str]] | None = None
    command = ""
    for line in text.splitlines():
        if (head := re.fullmatch(r"\t-> Unit (.+):", line)) is not None:
            current = units.setdefault(head[1], {}) if head[1].startswith("tooloo") else None
        elif current is not None and (exec_ := re.fullmatch(r"\t\t-> (Exec\w+):", line)) is not None:
            command = exec_[1]
        elif current is not None and line.startswith("\t\t\tCommand Line: "):
            current.setdefault(command, []).append(line.split(": ", 1)[1])
        elif current is not None and line.startswith("\t\t") and not line.startswith("\t\t\t") and ": " in line:
            key, value = line[2:].split(": ", 1)
            current.setdefault(key, []).append(re.sub(r" \((origin|destination)-[\w -]+\)$", "", value))
    return units


def argv_of(command_line: str) -> list[str]:
    """A dumped command line as the argv exec gets ($$ is a literal $ once systemd expands variables)."""
    return [word.replace("$$", "$") for word in shlex.split(command_line)]


def seconds(span: str) -> float:
    """A systemd time span as the dump writes it ("1min 30s", "100ms") in seconds."""
    units = {"h": 3600, "min": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    return sum(float(number) * units[unit] for number, unit in re.findall(r"([\d.]+)(h|min|ms|us|s)", span))


# -- the validators ---------------------------------------------------------------------------------


def test_the_shipped_stack_passes_systemd_analyze_verify(tmp_path: Path, systemd_analyze: str) -> None:
    out = export(tmp_path, SHIPPED)
    assert sorted(path.name for path in out.iterdir()) == sorted(
        [f"tooloo-{name}.service" for name in BUILTIN_SERVICES] + ["tooloo.target"])
    assert verify(systemd_analyze, out, user=False) == ""
    assert verify(systemd_analyze, out, user=True) == ""


def test_replicas_dependencies_a_command_and_redis_pass_systemd_analyze_verify(tmp_path: Path,
                                                                               systemd_analyze: str) -> None:
    out = export(tmp_path, rich_stack(tmp_path))
    assert {"tooloo-budget.1.service", "tooloo-budget.2.service", "tooloo-coach.1.service", "tooloo-coach.2.service",
            "tooloo-queue.service", "tooloo-web.service", "tooloo.target"} <= {path.name for path in out.iterdir()}
    assert verify(systemd_analyze, out, user=False) == ""
    assert verify(systemd_analyze, out, user=True) == ""


def test_the_check_is_not_vacuous_a_broken_unit_fails_it(tmp_path: Path, systemd_analyze: str) -> None:
    out = export(tmp_path, SHIPPED)
    unit = out / "tooloo-budget.service"
    text = unit.read_text(encoding="utf-8")
    for broken, said in ((text.replace("Restart=always", "Restart=sometimes"), "Failed to parse service restart"),
                         (text.replace("Type=notify", "Type=notify\nWatchdog=6s"), "Unknown key 'Watchdog'"),
                         (text.replace("\nExecStart=/", "\nExecStart=/nonexistent/"), "is not executable"),
                         (text.replace("PartOf=tooloo.target", "Requires=tooloo-nothing.service"), "not found")):
        unit.write_text(broken, encoding="utf-8")
        assert said in verify(systemd_analyze, out, user=False)


# -- what systemd makes of them: what `up` would start ---------------------------------------------


@pytest.mark.parametrize("stack", ["shipped", "rich"])
def test_systemd_reads_the_services_commands_ports_probes_and_dependencies_up_would_start(
        tmp_path: Path, systemd_reads: Callable[[Path], Units], stack: str) -> None:
    config = SHIPPED if stack == "shipped" else rich_stack(tmp_path)
    out = export(tmp_path, config)
    units = systemd_reads(out)
    loaded = load_config(config, env={})
    specs = stack_of(loaded).specs
    replicas = [(spec, replica) for spec in specs.values() for replica in spec.replicas]
    names = [f"tooloo-{replica.name}.service" for _, replica in replicas]
    assert sorted(units) == sorted([*names, "tooloo.target"])
    # systemd keeps a unit's dependencies in a set: their order in the dump is its own.
    assert sorted(units["tooloo.target"]["Wants"]) == sorted(units["tooloo.target"]["After"]) == sorted(names)

    for (spec, replica), name in zip(replicas, names, strict=True):
        unit = units[name]
        argv = argv_of(unit["ExecStart"][0])
        assert argv[1:] == list(spec.argv(replica)[1:]), name
        assert Path(argv[0]).name == Path(spec.argv(replica)[0]).name and Path(argv[0]).is_absolute()
        if replica.port is not None and spec.builtin:
            assert argv[argv.index("--port") + 1] == str(replica.port)
        assert unit["WorkingDirectory"] == [str(spec.cwd)]
        depended = sorted(f"tooloo-{other.name}.service" for dependency in spec.depends_on
                          for other in specs[dependency].replicas)
        assert sorted(set(unit.get("Requires", [])) & set(units)) == depended, name
        assert set(depended) <= set(unit["After"])
        assert unit["PartOf"] == ["tooloo.target"]
        assert _probes(unit, spec), name
        assert unit["Restart"] == [spec.restart.restart]
        assert seconds(unit["RestartSec"][0]) == pytest.approx(spec.restart.backoff_initial)
        assert seconds(unit["TimeoutStartSec"][0]) == pytest.approx(spec.startup_timeout)
        assert seconds(unit["TimeoutStopSec"][0]) == pytest.approx(max(spec.grace_period, 0.001))
        environment = unit.get("Environment", [])
        if spec.state_files:  # %S/tooloo, as the user manager resolves it (~/.config/tooloo with systemd 252)
            state = environment.pop(0)
            assert re.fullmatch(r"TOOLOO_STACK__STATE_DIR=/\S+/tooloo", state) and str(loaded.state_path()) not in state
        assert environment == [f"{key}={value}" for key, value in spec.env.items()], name
        assert [file for file in unit.get("EnvironmentFile", []) if not file.startswith("-")] == \
            ([str(spec.env_file)] if spec.env_file else [])
        assert unit["ProtectSystem"] == ["strict"] and unit["PrivateTmp"] == [("yes" if spec.builtin else "no")]
        # What the dump leaves out, from the file (systemd-analyze verify parses every line of it).
        lines = (out / name).read_text(encoding="utf-8").splitlines()
        assert "NoNewPrivileges=yes" in lines
        assert {f"StartLimitIntervalSec={spec.restart.crash_loop_window:g}s",
                f"StartLimitBurst={spec.restart.crash_loop_limit}"} <= set(lines)
        assert ("RestartPreventExitStatus=2" in lines) == spec.builtin
        # Its SQLite files in the state directory systemd makes for it, which the service is told of above.
        assert unit.get("StateDirectory", []) == (["tooloo"] if spec.state_files else []), name
        assert "ExecStartPre" not in unit
        assert unit.get("ReadWritePaths", []) == ([] if spec.builtin else [str(spec.cwd)]), name
        if spec.state_files:
            assert unit["StateDirectoryMode"] == ["0700"]


def _probes(unit: dict[str, list[str]], spec: ServiceSpec) -> bool:
    """Whether systemd waits for what `up` waits for: tooloo's own notify READY=1 once GET /ready passes and
    WATCHDOG=1 while GET /health does (sd_notify.py asks the spec's probes); a command is only started."""
    if not spec.builtin:
        return unit["Type"] == ["exec"] and seconds(unit["WatchdogSec"][0]) == 0
    return (unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
            and (spec.readiness, spec.liveness) == (Probe("http", "/ready"), Probe("http", "/health"))
            and seconds(unit["WatchdogSec"][0]) == pytest.approx(spec.probe_interval * spec.liveness_failures))


# -- secrets and environment files ------------------------------------------------------------------


def test_a_secret_is_never_written_into_a_unit(tmp_path: Path) -> None:
    config = rich_stack(tmp_path)
    (config.parent / "budget.env").write_text(f"{ENV_FILE}OPENAI_API_KEY={SECRET}\n", encoding="utf-8")
    out = export(tmp_path, config)
    result = tooloo(tmp_path, "--config", str(config), "export", "systemd", env={"OPENAI_API_KEY": SECRET})
    assert result.returncode == 0, result.stderr
    for text in [result.stdout, *(path.read_text(encoding="utf-8") for path in out.iterdir())]:
        assert SECRET not in text
    budget = (out / "tooloo-budget.1.service").read_text(encoding="utf-8")
    assert "EnvironmentFile=-%E/tooloo/budget.env\n" in budget  # the secret's place, for systemd
    assert f"EnvironmentFile={config.parent}/budget.env".replace("%", "%%") in budget
    assert "OPENAI_API_KEY never in a unit" in budget

    config.write_text(RICH.replace('REGION = "eu west"', f'OPENAI_API_KEY = "{SECRET}"'), encoding="utf-8")
    refused = tooloo(tmp_path, "--config", str(config), "export", "systemd")
    _one_clear_line(refused, 2, "services.budget.env sets OPENAI_API_KEY, a secret", "env_file")
    assert SECRET not in refused.stdout + refused.stderr


def generator_reads(directory: Path, text: str) -> dict[str, str]:
    """What systemd's own env-file parser makes of `text`, as its environment.d generator prints it.

    The generator expands `$` (so `text` holds none) and leaves out variables without a value, which
    EnvironmentFile= keeps as empty ones.
    """
    (directory / "environment.d").mkdir(exist_ok=True)
    (directory / "environment.d" / "x.conf").write_text(text, encoding="utf-8")
    result = subprocess.run([GENERATOR], capture_output=True, text=True, timeout=30,
                            env={"XDG_CONFIG_HOME": str(directory), "PATH": os.environ["PATH"]})
    assert result.returncode == 0, result.stderr
    found = {}
    for line in result.stdout.splitlines():
        key, value = line.split("=", 1)
        if value.startswith('"'):  # quoted as a shell's double quotes, with C escapes for control characters
            value = re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m[1], m[1]), value[1:-1])
        found[key] = value
    return {key: value for key, value in found.items() if key.startswith("T_")}


ENV_FILES = [
    "T_A=plain\n", "T_A=  spaced  \nT_B=x\n", "T_A='single # kept'\n", 'T_A="double \\" \\\\ kept"\n',
    "T_A=value # not a comment to systemd\n", "export T_A=1\n", 'T_A="tab\\tnewline\\n"\n',
    "T_A=back\\slash\n", "T_A='quoted'tail\n", 'T_A="q" # c\n', "# comment\n; also one\nT_A=1\n",
    "# ends in a backslash \\\nT_A=1\n", "T_A=1\r\nT_B=2\n", "T_A=\nT_B=\"\"\n", "  T_A = spaced key\n",
    "T_A=é ü\n", "T_A='multi\nline'\n", "T_A=x\\\ny\n",
]


@pytest.mark.parametrize("text", ENV_FILES)
def test_env_files_are_read_by_the_port_as_systemd_reads_them(tmp_path: Path, text: str) -> None:
    if not os.access(GENERATOR, os.X_OK):
        unavailable(f"{GENERATOR} (systemd's env-file parser) is missing: scripts/setup installs Debian's systemd")
    ported = {key: value for key, value in systemd_env_file(text).items() if value}
    assert ported == generator_reads(tmp_path, text)


def test_an_env_file_systemd_would_read_otherwise_is_refused(tmp_path: Path) -> None:
    config = rich_stack(tmp_path)
    env_file = config.parent / "budget.env"
    for text in ENV_FILES:
        env_file.write_text(text, encoding="utf-8")
        result = tooloo(tmp_path, "--config", str(config), "export", "systemd")
        try:
            ours = read_env_file(env_file)
        except ConfigError:  # as `up` refuses it, naming the line
            _one_clear_line(result, 2, "budget.env, line ")
            continue
        if ours == systemd_env_file(text):
            assert result.returncode == 0, (text, result.stderr)
        else:
            _one_clear_line(result, 2, "budget.env: systemd would read T_A", "otherwise than `tooloo up`")
    env_file.write_text("REGION=elsewhere\n", encoding="utf-8")
    _one_clear_line(tooloo(tmp_path, "--config", str(config), "export", "systemd"), 2,
                    "services.budget sets REGION in its env table and, otherwise, in its env_file")


# -- the command line -------------------------------------------------------------------------------


def test_without_out_it_prints_every_unit_under_its_name(tmp_path: Path) -> None:
    printed = tooloo(tmp_path, "--config", str(SHIPPED), "export", "systemd")
    assert printed.returncode == 0 and printed.stderr == "", printed.stderr
    assert printed.stdout == render("systemd", load_config(SHIPPED, env={}))
    assert printed.stdout.startswith("# ==> tooloo-web.service <==\n# tooloo-web.service: web of the tooloo stack")
    assert "\n# ==> tooloo.target <==\n" in printed.stdout


def test_out_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = export(tmp_path, SHIPPED)
    (out / "tooloo-web.service").write_text("# mine\n", encoding="utf-8")
    refused = tooloo(tmp_path, "--config", str(SHIPPED), "export", "systemd", "--out", str(out))
    _one_clear_line(refused, 2, "tooloo-web.service already exists", "--force")
    assert (out / "tooloo-web.service").read_text(encoding="utf-8") == "# mine\n"
    export(tmp_path, SHIPPED, "--force")
    assert (out / "tooloo-web.service").read_text(encoding="utf-8").startswith("# tooloo-web.service: web")


def test_what_it_cannot_write_faithfully_is_refused_saying_what_to_change(tmp_path: Path) -> None:
    _one_clear_line(tooloo(tmp_path, "--config", str(SHIPPED), "export", "systemd", "--image", "x"), 2,
                    "the systemd format has no option image")
    _one_clear_line(tooloo(tmp_path, "--config", str(SHIPPED), "export", "systemd",
                           env={"TOOLOO_SERVICES__WEB__PORT": "4999"}), 2,
                    "TOOLOO_SERVICES__WEB__PORT set in this environment would not reach the units")
    config = rich_stack(tmp_path)
    config.write_text(RICH.replace('"python3", "-m"', '"tooloo-no-such-program", "-m"'), encoding="utf-8")
    _one_clear_line(tooloo(tmp_path, "--config", str(config), "export", "systemd"), 2,
                    "services.queue.command: 'tooloo-no-such-program' is not on PATH")


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    config = rich_stack(tmp_path)
    assert render("systemd", load_config(config, env={})) == render("systemd", load_config(config, env={}))


# -- where the state lives -------------------------------------------------------------------------


def shipped_with(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    """The shipped tooloo.toml with `replacements` made, in tmp_path."""
    text = SHIPPED.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    config = tmp_path / "tooloo.toml"
    config.write_text(text, encoding="utf-8")
    return config


@pytest.mark.parametrize("where", ["elsewhere", "in state_dir"])
def test_a_state_file_named_by_absolute_path_stays_where_it_is_declared_and_writable(
        tmp_path: Path, systemd_analyze: str, systemd_reads: Callable[[Path], Units], where: str) -> None:
    # Absolute, it is where the service opens it whatever its state directory: even one inside `up`'s.
    ledger = (tmp_path / "data" if where == "elsewhere" else tmp_path / ".tooloo") / "ledger.db"
    out = export(tmp_path, shipped_with(tmp_path, ('database = "budget.db"', f'database = "{ledger}"')))
    unit = systemd_reads(out)["tooloo-budget.service"]
    assert unit["StateDirectory"] == ["tooloo"]  # its cache, within state_dir
    assert unit["ReadWritePaths"] == [str(ledger.parent)]  # its ledger, where it is declared
    assert argv_of(unit["ExecStartPre"][0]) == ["mkdir", "-p", "-m", "0700", str(ledger.parent)]
    assert "ExecStartPre" not in systemd_reads(out)["tooloo-reports.service"]
    assert verify(systemd_analyze, out, user=False) == ""


def test_a_state_dir_beside_the_configuration_still_puts_the_files_in_the_state_directory(
        tmp_path: Path, systemd_analyze: str, systemd_reads: Callable[[Path], Units]) -> None:
    config = shipped_with(tmp_path, ('state_dir = ".tooloo"', 'state_dir = "../state"'))
    out = export(tmp_path, config)
    unit = systemd_reads(out)["tooloo-budget.service"]
    assert unit["StateDirectory"] == ["tooloo"] and "ReadWritePaths" not in unit
    assert f"not in {tmp_path.parent / 'state'}, where `tooloo up` keeps it" in (out / "tooloo-budget.service").read_text()
    assert verify(systemd_analyze, out, user=False) == ""


def test_a_state_file_or_a_setting_systemd_would_put_elsewhere_is_refused(tmp_path: Path) -> None:
    climbing = shipped_with(tmp_path, ('database = "budget.db"', 'database = "../data/budget.db"'))
    _one_clear_line(tooloo(tmp_path, "--config", str(climbing), "export", "systemd"), 2,
                    "services.budget: '../data/budget.db' climbs out of [stack] state_dir")
    env = shipped_with(tmp_path, ("[services.budget]\n", '[services.budget]\nenv = { TOOLOO_STACK__STATE_DIR = "/srv" }\n'))
    _one_clear_line(tooloo(tmp_path, "--config", str(env), "export", "systemd"), 2,
                    "services.budget sets TOOLOO_STACK__STATE_DIR in its env table")


def test_a_service_keeps_its_files_in_the_state_directory_its_unit_names(tmp_path: Path) -> None:
    config = write_ephemeral_config(tmp_path)
    out = export(tmp_path, config)
    settings = {line.split("=", 1)[0]: line.split("=", 1)[1]
                for line in (out / "tooloo-budget.service").read_text(encoding="utf-8").splitlines() if "=" in line}
    assert settings["StateDirectory"] == "tooloo"
    variable, value = settings["Environment"].split("=", 1)
    state = tmp_path / "var-lib"  # what systemd makes of %S for the system manager: /var/lib
    environment = {key: item for key, item in os.environ.items() if not key.startswith("TOOLOO_")}
    environment[variable] = value.replace("%S", str(state))
    port = load_config(config, env={}).services["budget"].port
    (state / "tooloo").mkdir(parents=True)
    process = subprocess.Popen([sys.executable, "-m", "tooloo_cli.services", "--config", str(config), "budget"],
                               env=environment, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not _ready(f"http://127.0.0.1:{port}/ready"):
            assert process.poll() is None and time.monotonic() < deadline, "budget did not become ready"
            time.sleep(0.05)
    finally:
        end_process(process)
    assert {"budget.db", "budget-cache.db"} <= {path.name for path in (state / "tooloo").iterdir()}
    assert not (tmp_path / ".tooloo" / "budget.db").exists()  # not in `up`'s state_dir


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False
