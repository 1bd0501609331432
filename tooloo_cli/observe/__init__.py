"""`tooloo observe`: every service's observability document, polled concurrently, as tables.

    exit_code = observe(load_config(), ["web", "budget"], console)             # one shot
    observe(loaded, [], console, watch=True, interval=1.0)                      # live, until q or Ctrl-C

    poll.py        the concurrent poll (the loopback client, a thread a target, short timeouts); failure is data;
                   what a service sends made safe for a terminal, and the one test of a number
    render.py      the tables: services, tracing, rate limiting, caches, circuit breakers, pools
    rates.py       rates over the last few seconds (req/s, errors, refusals), from counters between polls
    dashboard.py   --watch: a summary that always fits, the detail sections fitted or paged by key
    terminal.py    the full-screen loop --watch and `tooloo top` share: a poll in a thread of its own, keys, q,
                   Ctrl-C, SIGTERM, Ctrl-Z, a resize; off a terminal, each frame printed as it is made
    top.py         `tooloo top`: CPU, memory, restarts and req/s per service, sorted

A one-shot observe exits 1 when any polled service is not up (for scripts and CI); --watch
exits 0 on q, 130 on Ctrl-C and 143 on SIGTERM, the terminal restored each time.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from tooloo_cli.config import LoadedConfig


def observe(loaded: LoadedConfig, names: list[str], console: Console, *, watch: bool = False,
            interval: float | None = None, timeout: float | None = None, as_json: bool = False) -> int:
    from tooloo_cli.observe.poll import poll, targets_of

    settings = loaded.config.observe
    interval = settings.interval if interval is None else interval
    timeout = settings.timeout if timeout is None else timeout
    targets = targets_of(loaded, names)
    if watch:
        from tooloo_cli.observe.dashboard import watch as run_dashboard

        return run_dashboard(targets, interval, timeout, console)  # q 0, Ctrl-C 130, SIGTERM 143

    observations = poll(targets, timeout)
    if as_json:
        print(json.dumps({"polledAt": time.time(), "up": sum(o.up for o in observations),
                          "total": sum(o.observable for o in observations),
                          "services": {o.name: o.to_dict() for o in observations}}, indent=2))
    else:
        from tooloo_cli.observe.render import tables

        console.print(*tables(observations, console))
    return 0 if all(o.up for o in observations if o.observable) else 1
