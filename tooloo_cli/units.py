"""Numbers as people read them, shared by every table tooloo prints.

    duration(75.0)       # "1m15s"
    mebibytes(36700160)  # "35.0 MiB"
"""

from __future__ import annotations

import math
from typing import Any


def duration(seconds: Any) -> str:
    """Seconds as 42s, 3m05s or 2h07m; "-" for anything that is not a finite number."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "-"
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def mebibytes(value: Any) -> str:
    """Bytes in MiB (2**20 bytes, what `ps` and `top` count in), with their unit; "-" for a non-number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value / 2**20:.1f} MiB"
