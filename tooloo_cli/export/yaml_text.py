"""YAML for the exports, written by hand: block mappings and sequences, every string double-quoted.

    document({"global": {"scrape_interval": "15s"}, "scrape_configs": []}, comments=["made by tooloo"])
    # '# made by tooloo\\nglobal:\\n  scrape_interval: "15s"\\nscrape_configs: []\\n'

Contract: the same value gives the same text (keys keep their order), and the text means
exactly that value to any YAML 1.1 or 1.2 reader (Prometheus's go-yaml, kubectl, docker
compose): strings are always quoted, so none reads as a number, a boolean or null
(`"on"`, `"1.0"`, `"~"`); a key is written bare only when no reader can take it for
anything but a string. Values are str, int, bool, dict (str keys) and list; anything else
is a TypeError, a bug of the exporter, not the user's. Small enough that the exports need
no YAML library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# A key no YAML reader takes for anything but a string, once YAML 1.1's booleans and null are excluded.
_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*")
_YAML11_WORDS = {"y", "yes", "n", "no", "true", "false", "on", "off", "null"}
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def document(value: dict[str, Any], comments: Iterable[str] = ()) -> str:
    """`value` as a YAML document, after `comments` (one `# ` line each)."""
    lines = [f"# {_escaped(line)}".rstrip() for comment in comments for line in comment.splitlines() or [""]]
    lines += _mapping(value, 0)
    return "\n".join(lines) + "\n"


def quoted(text: str) -> str:
    """`text` as a double-quoted YAML scalar: escapes for quotes, backslashes and every unprintable character."""
    return f'"{_escaped(text, _ESCAPES)}"'


def _escaped(text: str, escapes: dict[str, str] | None = None) -> str:
    """`text` with what YAML (or the terminal it is printed on) must not see raw as \\u escapes: control
    characters, and the lone surrogates a file name that is not UTF-8 decodes to; `escapes` first."""
    out = []
    for char in text:
        if escapes is not None and char in escapes:
            out.append(escapes[char])
        elif char.isprintable() and char != "\ufeff":  # isprintable() is False for U+0085, U+2028, U+2029
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return "".join(out)


def _key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a YAML key of an export must be a str, not {type(key).__name__}")
    return key if _BARE_KEY.fullmatch(key) and key.lower() not in _YAML11_WORDS else quoted(key)


def _scalar(value: Any) -> str | None:
    """The one-line form of `value`, or None when it takes lines of its own (a non-empty dict, a list of them)."""
    if isinstance(value, dict):
        return "{}" if not value else None
    if isinstance(value, list):
        # Scalars on one line, as a flow sequence (`targets: ["127.0.0.1:3000"]`); anything else in lines.
        if any(isinstance(item, (dict, list)) for item in value):
            return None
        return f"[{', '.join(_plain(item) for item in value)}]"
    return _plain(value)


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, bool):  # before int: a bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"an export cannot write a {type(value).__name__} as YAML")


def _mapping(value: dict[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for key, item in value.items():
        one_line = _scalar(item)
        if one_line is not None:
            lines.append(f"{pad}{_key(key)}: {one_line}")
        else:
            lines.append(f"{pad}{_key(key)}:")
            lines += _mapping(item, indent + 2) if isinstance(item, dict) else _sequence(item, indent + 2)
    return lines


def _sequence(value: list[Any], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for item in value:
        one_line = _scalar(item)
        if one_line is not None:
            lines.append(f"{pad}- {one_line}")
            continue
        # The item's first line shares the dash's line; the rest line up under it.
        nested = _mapping(item, indent + 2) if isinstance(item, dict) else _sequence(item, indent + 2)
        lines.append(f"{pad}- {nested[0].lstrip()}")
        lines += nested[1:]
    return lines
