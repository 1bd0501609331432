"""`tooloo export systemd`: a unit per replica and a target that groups them, run on this host as declared.

    tooloo export systemd --out ~/.config/systemd/user/ && systemctl --user daemon-reload
    systemctl --user start tooloo.target       # returns once every unit has started (tooloo's own: ready)
    SystemdExporter().render(Declaration.of(load_config()))
    # [File("tooloo-web.service", "# tooloo-web.service: …"), …, File("tooloo.target", …)]

What it declares, every fact from the replica's ServiceSpec (what `tooloo up` starts):

- `tooloo-REPLICA.service` per replica (`tooloo-web.service`, `tooloo-budget.1.service`,
  `tooloo-budget.2.service`: the names `tooloo status` and `logs` use), PartOf= the target;
  ExecStart= the replica's argv (tooloo's own: this interpreter, `--config` the file, its
  port; a command's program found on PATH now, as `up` would find it), WorkingDirectory=
  its cwd. User and system managers both run them: nothing here names a user or a manager.
- tooloo's own are Type=notify (NotifyAccess=main): READY=1 once GET /ready answers on its
  port, WATCHDOG=1 while GET /health does (services/sd_notify.py), WatchdogSec= the
  supervisor's tolerance (probe interval × liveness failures). A `command` cannot be
  assumed to speak sd_notify: Type=exec, started once its program runs, not probed, so
  what depends on it may start before it listens.
- depends_on: After= and Requires= every replica of each dependency (it starts once they
  have: tooloo's own, once ready, as `up` waits; it is not started if one fails).
- The restart policy: Restart= as declared, RestartSec= the first backoff, and the crash
  loop as StartLimitIntervalSec=/StartLimitBurst= (that many exits within the window and
  it stays failed). systemd 252 (Debian 12) has no growing delay (RestartSteps= is 254's),
  so the backoff does not double as under `up`. RestartPreventExitStatus= the code with
  which one of tooloo's own refuses to start on its configuration or data; TimeoutStartSec=
  the startup timeout, TimeoutStopSec= the grace period (SIGTERM, then SIGKILL).
- Environment= per variable of its `env` table (quoted as systemd.syntax(7) reads it);
  EnvironmentFile= its env_file, read by systemd at each start as `up` reads it. A secret
  (a variable its `secrets` names: the provider's API key) is never written into a unit,
  which anyone may read: an `env` table holding one is refused; it comes from the env_file
  or from `%E/tooloo/SERVICE.env` (/etc/tooloo/… for the system manager, ~/.config/tooloo/…
  for a user's), optional, yours to write and to keep unreadable by others (chmod 600).
- State: tooloo's own keep their SQLite files (cache, ledger) in StateDirectory=tooloo,
  %S/tooloo: /var/lib/tooloo for the system manager; for a user's, ~/.config/tooloo with
  systemd 252 (Debian 12; `systemctl --user show -p Environment tooloo-budget` names it).
  systemd makes it 0700 and writable in the sandbox; the service is handed it as
  TOOLOO_STACK__STATE_DIR (the files keep their names within it). It is not the
  directory `tooloo up` uses ([stack] state_dir): to move a stack's data over, stop both
  and copy the files (README, systemd). A state file named by an absolute path stays
  where it is: ReadWritePaths= its directory, made (0700) by an ExecStartPre=+mkdir,
  which runs outside the sandbox (whose ReadWritePaths= must exist beforehand).
- Hardening: NoNewPrivileges=yes, ProtectSystem=strict (the file system read-only but for
  the state above or, for a command, its working directory); PrivateTmp=yes for tooloo's
  own unless [stack] redis_url is a socket under /tmp.
- `tooloo.target`: Wants= and After= every unit, so that starting it starts them all and
  returns once each has started; stopping it stops them (PartOf=). WantedBy=default.target:
  `systemctl enable tooloo.target` starts the stack at boot (a user's, at login, or with
  `loginctl enable-linger`).

Refused (UsageError, exit 2, saying what to change): TOOLOO_* overrides in the exporting
environment (the units run on tooloo.toml alone, without them), a relative state file
name climbing out of state_dir, TOOLOO_STACK__STATE_DIR in a service's env table or
env_file (it would override the unit's), an `env` table holding a secret, an env_file that systemd would read otherwise than tooloo does (`export KEY=`,
a `#` after an unquoted value, escapes other than \\" and \\\\ in double quotes), a command
not found on PATH, a path with a control character. Rendering is deterministic for a host;
the units hold its paths (the interpreter, tooloo.toml), so export again on another host.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from tooloo_cli.config.loader import STATE_DIR_VARIABLE
from tooloo_cli.errors import UsageError
from tooloo_cli.export.base import Declaration, Exporter, File, state_files
from tooloo_cli.stack import Replica, ServiceSpec, read_env_file

TARGET = "tooloo.target"
# Where a service's secrets may be kept for systemd: %E is /etc for the system manager, ~/.config for a user's.
SECRETS_FILE = "%E/tooloo/{service}.env"
# StateDirectory=: tooloo's own keep their state in %S/tooloo (/var/lib/tooloo; a user's: see the module).
STATE_DIRECTORY = "tooloo"
# What a word may hold unquoted in ExecStart= and Environment= (systemd.syntax(7), systemd.service(5)).
_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SystemdExporter(Exporter):
    """A .service per replica of every service, and tooloo.target starting them all."""

    def render(self, declaration: Declaration) -> list[File]:
        loaded = declaration.loaded
        if loaded.overrides:
            raise UsageError(f"{', '.join(loaded.overrides)} set in this environment would not reach the units: "
                             "systemd runs the services on tooloo.toml alone. Put the setting in "
                             f"{loaded.source or 'tooloo.toml'}, or unset it, and export again")
        origin = (f"declared in {loaded.source}" if loaded.source is not None
                  else f"of tooloo's defaults, in {loaded.base_dir}")
        specs = list(declaration.stack.specs.values())
        files = [File(unit_name(replica), _unit(declaration, spec, replica, origin))
                 for spec in specs for replica in spec.replicas]
        return [*files, File(TARGET, _target([file.name for file in files], len(specs), origin))]


def unit_name(replica: Replica) -> str:
    """The unit of one replica: `tooloo-budget.1.service` (tooloo's replica names are valid in unit names)."""
    return f"tooloo-{replica.name}.service"


def _unit(declaration: Declaration, spec: ServiceSpec, replica: Replica, origin: str) -> str:
    stack = declaration.stack
    of = f" (replica {replica.index} of {len(spec.replicas)})" if len(spec.replicas) > 1 else ""
    port = f", on port {replica.port}" if replica.port is not None else ""
    unit = [f"Description=tooloo {replica.name}{of}{port}", f"PartOf={TARGET}"]
    needed = [unit_name(other) for name in spec.depends_on for other in stack.specs[name].replicas]
    if needed:
        unit += [f"After={' '.join(needed)}", f"Requires={' '.join(needed)}"]
    policy = spec.restart
    unit += [f"# {policy.crash_loop_limit} exits within {policy.crash_loop_window:g} s and it stays failed, "
             "as under `tooloo up`.",
             f"StartLimitIntervalSec={_duration(policy.crash_loop_window)}",
             f"StartLimitBurst={policy.crash_loop_limit}"]

    service: list[str] = []
    if spec.builtin:
        service += ["# READY=1 once GET /ready answers on its port, WATCHDOG=1 while GET /health does.",
                    "Type=notify", "NotifyAccess=main",
                    f"WatchdogSec={_duration(spec.probe_interval * spec.liveness_failures)}"]
    else:
        service += ["# A command of your own: started, not probed (it may not speak sd_notify).", "Type=exec"]
    inside, outside = state_files(spec, "systemd's StateDirectory=")
    writable = _writable(spec, outside)
    if inside:
        _check_state_dir_unset(spec)
        service += [f"# Its state in %S/{STATE_DIRECTORY} (made 0700 by systemd), not in "
                    f"{_checked(Path(os.path.normpath(declaration.loaded.state_path())))}, where `tooloo up` keeps it.",
                    f"StateDirectory={STATE_DIRECTORY}", "StateDirectoryMode=0700"]
    if outside:
        service += ["# ReadWritePaths= must exist before the sandbox is made: made outside it (+), 0700 as `up` does.",
                    "ExecStartPre=+" + _command(["mkdir", "-p", "-m", "0700", *writable])]
    service += [f"ExecStart={_command(_argv(spec, replica))}", f"WorkingDirectory={_setting(spec.cwd)}"]
    if inside:
        service.append(f"Environment={STATE_DIR_VARIABLE}=%S/{STATE_DIRECTORY}")
    service += [f"Environment={_word(_specifiers(f'{key}={value}'), dollar=False)}"
                for key, value in _plain_env(spec)]
    # Later files win: its env_file over this one, as under `up` its env_file wins over what the
    # command hands it (the secrets).
    if spec.secrets:
        service += [f"# {', '.join(spec.secrets)} never in a unit (anyone may read it): from this file "
                    "(optional, chmod 600), or from its env_file.",
                    f"EnvironmentFile=-{SECRETS_FILE.format(service=spec.name)}"]
    if spec.env_file is not None:
        _check_env_file(spec)
        service.append(f"EnvironmentFile={_setting(spec.env_file)}")
    # tooloo's policies (always, on-failure, no) are systemd's names; its first backoff, systemd's only one.
    service += [f"Restart={policy.restart}", f"RestartSec={_duration(policy.backoff_initial)}"]
    if policy.refusal_exit_code is not None:
        service += [f"# Exit {policy.refusal_exit_code}: it refuses to start on its configuration or data, "
                    "which a restart would not change.",
                    f"RestartPreventExitStatus={policy.refusal_exit_code}"]
    service += [f"TimeoutStartSec={_duration(spec.startup_timeout)}",
                f"TimeoutStopSec={_duration(spec.grace_period)}"]
    service.append("# The file system read-only, " + (
        "but for its working directory (add what else it writes: systemctl edit)." if not spec.builtin
        else "but for its state." if spec.state_files else "as it writes no file."))
    service += ["NoNewPrivileges=yes", "ProtectSystem=strict"]
    if writable:
        service.append(f"ReadWritePaths={' '.join(_word(_specifiers(path), dollar=False) for path in writable)}")
    if spec.builtin and not _redis_in_tmp(declaration):
        service.append("PrivateTmp=yes")
    header = [f"{unit_name(replica)}: {replica.name}{of} of the tooloo stack {origin}.",
              "Written by `tooloo export systemd`: export it again when tooloo.toml changes."]
    return _ini(header, [("Unit", unit), ("Service", service)])


def _target(units: list[str], services: int, origin: str) -> str:
    header = [f"{TARGET}: every service of the tooloo stack {origin}.",
              "Written by `tooloo export systemd`. Starting it starts every unit and returns once each has "
              "started;", "stopping it stops them all (they are PartOf= it)."]
    unit = [f"Description=tooloo stack ({services} services, {len(units)} processes)",
            *(f"Wants={name}" for name in units), *(f"After={name}" for name in units)]
    return _ini(header, [("Unit", unit), ("Install", ["WantedBy=default.target"])])


def _ini(header: list[str], sections: list[tuple[str, list[str]]]) -> str:
    lines = [f"# {line}" for line in header]
    for name, entries in sections:
        lines += ["", f"[{name}]", *entries]
    return "\n".join(lines) + "\n"


def _argv(spec: ServiceSpec, replica: Replica) -> list[str]:
    """The replica's argv with its program as a full path, found as `up` would find it (PATH, or its cwd)."""
    program, *arguments = spec.argv(replica)
    if "/" in program:
        return [str(spec.cwd / program), *arguments]  # relative to its working directory, as exec sees it
    found = shutil.which(program)
    if found is None:
        raise UsageError(f"services.{spec.name}.command: {program!r} is not on PATH here; the unit needs its "
                         "full path: install it, or give the path in command")
    return [os.path.abspath(found), *arguments]


def _plain_env(spec: ServiceSpec) -> list[tuple[str, str]]:
    """Its `env` table, in order, refused when it holds one of its secrets."""
    held = [key for key in spec.env if key in spec.secrets]
    if held:
        raise UsageError(f"services.{spec.name}.env sets {', '.join(held)}, a secret: a unit file is readable by "
                         f"everyone, so the export will not write it. Move it to services.{spec.name}.env_file "
                         f"(or {SECRETS_FILE.format(service=spec.name)} for systemd), and export again")
    return list(spec.env.items())


def _check_state_dir_unset(spec: ServiceSpec) -> None:
    """UsageError when its env table or env_file sets the state directory the unit sets (they would win)."""
    from_file = read_env_file(spec.env_file) if spec.env_file is not None else {}
    setting = [origin for origin, variables in (("env table", spec.env), ("env_file", from_file))
               if STATE_DIR_VARIABLE in variables]
    if setting:
        raise UsageError(f"services.{spec.name} sets {STATE_DIR_VARIABLE} in its {' and '.join(setting)}: under systemd "
                         f"its state is in StateDirectory= ({STATE_DIR_VARIABLE}=%S/{STATE_DIRECTORY}, set by the unit). "
                         "Remove it, and export again")


def _writable(spec: ServiceSpec, outside: list[Path]) -> list[str]:
    """What ProtectSystem=strict leaves it to write besides its StateDirectory=: the directories of its
    state files outside state_dir, or a command's cwd."""
    directories = [path.parent for path in outside] if spec.builtin else [Path(os.path.normpath(spec.cwd))]
    return list(dict.fromkeys(_checked(directory) for directory in directories))


def _redis_in_tmp(declaration: Declaration) -> bool:
    """Whether [stack] redis_url is a Unix socket under /tmp or /var/tmp, which PrivateTmp= would hide."""
    url = urlsplit(declaration.loaded.config.stack.redis_url)
    return url.scheme == "unix" and url.path.startswith(("/tmp/", "/var/tmp/"))


def _duration(seconds: float) -> str:
    """A systemd time span in whole milliseconds, at least 1 ms (0 would mean "no limit" to systemd)."""
    milliseconds = max(round(seconds * 1000), 1)
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def _command(argv: Iterable[str]) -> str:
    """A command line of ExecStart= and its kin: one word per argument."""
    return " ".join(_word(_specifiers(argument), dollar=True) for argument in argv)


def _word(text: str, *, dollar: bool) -> str:
    """`text` as one word of ExecStart= (`dollar`: $ is doubled, or systemd expands it) or Environment=."""
    if dollar:
        text = text.replace("$", "$$")
    if _PLAIN.fullmatch(text):
        return text
    escaped = "".join(_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if _CONTROL.match(char) else char)
                      for char in text)
    return f'"{escaped}"'


def _specifiers(text: str) -> str:
    """`%` doubled: systemd reads %h, %n … as specifiers in almost every setting."""
    return text.replace("%", "%%")


def _setting(path: Path) -> str:
    """A path as a setting that takes the rest of its line (WorkingDirectory=, EnvironmentFile=)."""
    return _specifiers(_checked(path))


def _checked(path: Path) -> str:
    """`path` as text, refused when a unit cannot hold it (a control character, spaces at either end)."""
    text = str(path)
    if _CONTROL.search(text) or text != text.strip():
        raise UsageError(f"{text!r}: a path with a control character or spaces at either end cannot go into a "
                         "unit; rename it")
    return text


def _check_env_file(spec: ServiceSpec) -> None:
    """UsageError unless systemd's EnvironmentFile= reads the env_file as `up` does (the same variables)."""
    assert spec.env_file is not None
    ours = read_env_file(spec.env_file)  # ConfigError, naming the line, as `up` refuses the file
    theirs = systemd_env_file(spec.env_file.read_text(encoding="utf-8"))
    differing = sorted(key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key))
    if differing:
        raise UsageError(f"{spec.env_file}: systemd would read {', '.join(differing)} otherwise than `tooloo up` "
                         "does. Write each as KEY=value without `export`, a ` #` comment after it or "
                         "backslashes, or as KEY='value' in single quotes, and export again")
    # systemd lets EnvironmentFile= win over Environment=; `up` lets the env table win over the file.
    both = sorted(key for key in spec.env if key in ours and ours[key] != spec.env[key])
    if both:
        raise UsageError(f"services.{spec.name} sets {', '.join(both)} in its env table and, otherwise, in its "
                         f"env_file {spec.env_file}: systemd would take the file's, `up` takes the table's. Keep "
                         "each in one of them, and export again")


def systemd_env_file(text: str) -> dict[str, str]:
    """The variables systemd 252's EnvironmentFile= makes of `text`: a port of env-file.c's
    parse_env_file_internal, state by state, then the names exec keeps (env_name_is_valid).

    Unlike `tooloo up`'s reading: an unquoted value keeps a `#` and drops a `\\` (it escapes
    the next character), a double-quoted one keeps `\\n` as two characters, text may follow a
    closing quote, `export KEY` is no variable's name, and a comment ending in `\\` goes on
    to the next line (until systemd 254).
    """
    variables: dict[str, str] = {}
    state, key, value = "pre-key", "", ""
    key_space = value_space = -1  # where trailing whitespace of the key, of an unquoted value, starts

    def push() -> None:
        name = key[:key_space] if key_space >= 0 else key
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            variables[name] = value[:value_space] if state == "value" and value_space >= 0 else value

    for char in text:
        if state == "pre-key":
            if char in "#;":
                state = "comment"
            elif char not in " \t\n\r":
                state, key, key_space = "key", char, -1
        elif state == "key":
            if char in "\n\r":
                state = "pre-key"
            elif char == "=":
                state, value, value_space = "pre-value", "", -1
            else:
                key_space = -1 if char not in " \t\n\r" else (len(key) if key_space < 0 else key_space)
                key += char
        elif state in ("pre-value", "value") and char in "\n\r":
            push()
            state = "pre-key"
        elif state == "pre-value":
            state = {"'": "single", '"': "double", "\\": "value-escape"}.get(char, state)
            if state == "pre-value" and char not in " \t":
                state, value = "value", value + char
        elif state == "value":
            if char == "\\":
                state, value_space = "value-escape", -1
            else:
                value_space = -1 if char not in " \t" else (len(value) if value_space < 0 else value_space)
                value += char
        elif state == "value-escape":
            state, value = "value", value + ("" if char in "\n\r" else char)
        elif state == "single":
            state, value = ("pre-value", value) if char == "'" else ("single", value + char)
        elif state == "double":
            state, value = ("pre-value", value) if char == '"' else \
                ("double-escape", value) if char == "\\" else ("double", value + char)
        elif state == "double-escape":
            state = "double"
            value += char if char in '"\\`$' else "" if char == "\n" else "\\" + char
        elif state == "comment":
            state = "comment-escape" if char == "\\" else "pre-key" if char in "\n\r" else "comment"
        else:  # comment-escape: whatever follows a backslash in a comment, a newline too, is comment
            state = "comment"
    if state not in ("pre-key", "key", "comment", "comment-escape"):
        push()
    return variables
