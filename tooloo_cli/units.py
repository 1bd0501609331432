"""Numbers as people read them, shared by every table tooloo prints.

    duration(75.0)       # "1m15s"
    megabytes(36700160)  # "35.0 MB"
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


def megabytes(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value / 1024 / 1024:.1f} MB"
