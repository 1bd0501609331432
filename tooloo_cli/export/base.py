"""What every exporter is: an `Exporter` renders the `Declaration` into `File`s; `write` puts them on disk.

    declaration = Declaration.of(load_config())        # the configuration and its ServiceSpecs
    files = PrometheusExporter().render(declaration)   # [File("prometheus.yml", "global:\\n…")]
    print(to_stdout(files), end="")                    # what `tooloo export prometheus` prints
    write(files, Path("prometheus.yml"), force=False)  # [Path("prometheus.yml")], or OutputRefused

Contract: an exporter reads only its declaration (`declaration.stack`, derived once by
`stack_of`, and the configuration it came from), never a list of services of its own, and
returns the files whole; it writes nothing itself. Rendering is deterministic: the same
declaration gives the same bytes, so an export kept in git changes only when the stack does.

`write` refuses (OutputRefused, a UsageError: exit 2) before it writes anything: a file
that exists without `force`, a directory that is missing or is a file, a place that
cannot be written. One file goes to `out` itself, or into `out` when that is a directory;
several go into the directory `out`, made when missing (its parent must exist).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tooloo_cli.errors import ToolooError, UsageError

if TYPE_CHECKING:
    from tooloo_cli.config import LoadedConfig
    from tooloo_cli.stack import ServiceSpec, Stack


class OutputRefused(UsageError):
    """The export cannot go where it was asked to; the message says why and what to do (exit 2)."""


@dataclass(frozen=True)
class Declaration:
    """The stack as `tooloo.toml` declares it: what every exporter renders from."""

    loaded: LoadedConfig
    stack: Stack

    @classmethod
    def of(cls, loaded: LoadedConfig) -> Declaration:
        """The declaration of `loaded` (ConfigError for what its ServiceSpecs cannot be made of)."""
        from tooloo_cli.stack import stack_of

        return cls(loaded, stack_of(loaded))


@dataclass(frozen=True)
class File:
    """One file of an export: its name (no directory) and its whole text."""

    name: str
    content: str

    def __post_init__(self) -> None:
        # `write` puts every file directly in the output directory: a name must not climb out of it.
        if not self.name or self.name in (".", "..") or "/" in self.name or os.sep in self.name:
            raise ValueError(f"an export file needs a plain name, not {self.name!r}")


def state_files(spec: ServiceSpec, engine: str) -> tuple[list[str], list[Path]]:
    """Its state files as tooloo.toml names them: the names within [stack] state_dir (normalised)
    and the absolute paths. An engine gives a service a state directory of its own (a volume,
    systemd's StateDirectory=) in place of state_dir: a relative name that climbs out of it would
    land beside that directory, so it is refused (UsageError, naming `engine`)."""
    within: list[str] = []
    absolute: list[Path] = []
    for name in spec.state_names:
        normal = os.path.normpath(name)
        if os.path.isabs(normal):
            absolute.append(Path(normal))
        elif normal.split(os.sep, 1)[0] == os.pardir:
            raise UsageError(f"services.{spec.name}: {name!r} climbs out of [stack] state_dir, which {engine} "
                             "replaces with a directory of its own; name the file within it (cache.db, data/x.db)"
                             " or give an absolute path")
        else:
            within.append(normal)
    return within, absolute


class Exporter(ABC):
    """One export format, registered under its name in the `tooloo.exporters` entry points.

    A subclass is made once per export, with no arguments or with keyword options of its
    own, each with a default (prometheus's `scrape_interval`; k8s's image, say); an option
    a user can get wrong raises UsageError, naming it.
    """

    @abstractmethod
    def render(self, declaration: Declaration) -> list[File]:
        """Every file of the export, in the order they are printed and written."""

    def to_stdout(self, files: Sequence[File]) -> str:
        """What is printed without --out: the default suits formats whose comments start with `#`."""
        return to_stdout(files)


def to_stdout(files: Sequence[File]) -> str:
    """One file's text as it is; several, each under a `# ==> NAME <==` line (as `tail` heads them)."""
    if len(files) == 1:
        return files[0].content
    return "\n".join(f"# ==> {file.name} <==\n{file.content}" for file in files)


def write(files: Sequence[File], out: Path, *, force: bool = False) -> list[Path]:
    """Writes `files` at `out` (see the module's docstring) and returns where each went."""
    several = len(files) != 1
    into_directory = several or out.is_dir()
    directory = out if into_directory else out.parent
    paths = [out / file.name for file in files] if into_directory else [out]
    _check_place(directory, may_create=several)
    for path in paths:
        if path.is_dir():
            raise OutputRefused(f"{path} is a directory; name a file, or remove the directory")
        if path.exists() and not force:
            raise OutputRefused(f"{path} already exists; add --force to overwrite it")
        if path.exists() and not os.access(path, os.W_OK):
            raise OutputRefused(f"{path} cannot be written (permissions); choose another --out")
    try:
        directory.mkdir(exist_ok=True)
        for path, file in zip(paths, files, strict=True):
            path.write_text(file.content, encoding="utf-8")
    except OSError as exc:  # a full disk, a file system gone read-only since the checks
        raise ToolooError(f"cannot write {exc.filename or directory}: {exc.strerror or exc}") from None
    return paths


def _check_place(directory: Path, *, may_create: bool) -> None:
    """OutputRefused unless files can be made in `directory` (or, when it may be made, in its parent)."""
    if directory.exists() and not directory.is_dir():
        raise OutputRefused(f"{directory} is a file, not a directory; choose another --out")
    if not directory.exists():
        missing = directory.parent if may_create else directory
        if not missing.is_dir():
            raise OutputRefused(f"{missing} is not a directory; create it first, or choose another --out")
        directory = missing
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputRefused(f"{directory} cannot be written (permissions); choose another --out")
