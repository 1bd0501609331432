r"""Numbers (and text from elsewhere) as people read them, shared by everything tooloo prints.

    duration(75.0)       # "1m15s"
    mebibytes(36700160)  # "35.0 MiB"
    visible("a\rb")      # "a\x0db": a control character shown, not obeyed
"""

from __future__ import annotations

import math
from typing import Any

# Control characters (but tab) as escapes a person can read: C0, DEL and C1.
_VISIBLE = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if code != 0x09}


def visible(text: str) -> str:
    """`text` with its control characters but tab written out (`\\x1b`): text from a service, shown on a
    terminal, must not move its cursor or send it a sequence (a carriage return could paint a forged
    line over the real prefix; rich drops only BEL, BS, VT, FF and CR, and passes ESC on)."""
    return text if text.isprintable() else text.translate(_VISIBLE)


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (JSON allows 10**400)
        return False


def duration(seconds: Any) -> str:
    """Seconds as 42s, 3m05s or 2h07m; "-" for anything that is not a finite number (or past a float's range)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not _finite(seconds):
        return "-"
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def mebibytes(value: Any) -> str:
    """Bytes in MiB (2**20 bytes, what `ps` and `top` count in), with their unit; "-" for a non-number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
        return "-"
    return f"{value / 2**20:.1f} MiB"
