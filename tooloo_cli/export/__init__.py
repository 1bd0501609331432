"""Exports: the stack as declared in `tooloo.toml`, written for the tools a team already runs.

    from tooloo_cli.export import Declaration, exporter, formats, render, write
    formats()                                            # ["prometheus"]: every registered format
    render("prometheus", loaded, scrape_interval="1s")   # what `tooloo export prometheus` prints, as a str
    chosen = exporter("prometheus")                      # an Exporter, or UnknownFormat (exit 2)
    files = chosen.render(Declaration.of(loaded))
    write(files, Path("prometheus.yml"), force=True)     # or print(chosen.to_stdout(files), end="")

    base.py         Declaration, File, Exporter (the protocol), write and to_stdout, OutputRefused
    yaml_text.py    YAML written by hand, deterministic, for every YAML format
    prometheus.py   the scrape configuration

A format is an entry point in the `tooloo.exporters` group, named as the format and
naming an Exporter subclass (as honcho registers its exporters), so a package of its own
can add one; tooloo's are in its pyproject.toml. A format's options (prometheus's
`scrape_interval`) are keyword arguments of its class: `exporter(name, **options)` passes
them on, and refuses one the format does not take (UsageError). Nothing here is imported
at `tooloo`'s start: the registry is read, and an exporter's module imported, only when a
format is asked for. Exporters sit above the stack model and the configuration and import
nothing that runs services.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tooloo_cli.errors import ToolooError, UsageError
from tooloo_cli.export.base import Declaration, Exporter, File, OutputRefused, to_stdout, write

if TYPE_CHECKING:
    from tooloo_cli.config import LoadedConfig

ENTRY_POINT_GROUP = "tooloo.exporters"

__all__ = [
    "ENTRY_POINT_GROUP",
    "Declaration",
    "Exporter",
    "File",
    "OutputRefused",
    "UnknownFormat",
    "exporter",
    "formats",
    "render",
    "to_stdout",
    "write",
]


class UnknownFormat(UsageError):
    """No exporter is registered under that name; the message lists those that are (exit 2)."""


def formats() -> list[str]:
    """The registered formats' names, sorted."""
    from importlib.metadata import entry_points

    return sorted({point.name for point in entry_points(group=ENTRY_POINT_GROUP)})


def render(name: str, loaded: LoadedConfig, **options: Any) -> str:
    """What `tooloo export NAME` prints for `loaded`'s stack, made with the format's `options`."""
    chosen = exporter(name, **options)
    return chosen.to_stdout(chosen.render(Declaration.of(loaded)))


def exporter(name: str, **options: Any) -> Exporter:
    """The exporter registered as `name`, made with `options`: UnknownFormat if none is, UsageError for an
    option it does not take, ToolooError if it cannot be loaded."""
    from importlib.metadata import entry_points

    points = {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in points:
        raise UnknownFormat(_unknown(name, sorted(points)))
    point = points[name]
    try:
        made = point.load()
    except Exception as exc:  # a broken plug-in must not look like a bug of tooloo's
        raise ToolooError(f"the {name} exporter ({point.value}) cannot be loaded: {type(exc).__name__}: {exc}") from None
    if not (isinstance(made, type) and issubclass(made, Exporter)):
        raise ToolooError(f"the {name} exporter ({point.value}) is not a tooloo Exporter class")
    import inspect

    signature = inspect.signature(made)
    try:
        signature.bind(**options)
    except TypeError:
        unknown = sorted(set(options) - set(signature.parameters))
        raise UsageError(f"the {name} format has no option {', '.join(unknown)}; its options: "
                         f"{', '.join(signature.parameters) or 'none'}") from None
    return made(**options)


def _unknown(name: str, known: list[str]) -> str:
    if not known:
        return (f"{name!r} is not an export format, and none is registered: tooloo's installation lacks its "
                "entry points; reinstall it (scripts/setup, or pip install -e .)")
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{name!r} is not an export format{hint}; the formats: {', '.join(known)}"
