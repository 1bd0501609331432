"""A full-screen view redrawn in place, with single keys: what `observe --watch` and `top` share.

    class View:                                  # the Screen protocol
        def poll(self) -> None: ...              # fetch what the next frame shows
        def frame(self, console, keys) -> RenderableType: ...   # keys: whether a key is read
        def key(self, key: str) -> None: ...     # "tab", "1", "m" ...
    code = run(View(), console, interval=1.0)    # 0 on q, 130 on Ctrl-C, 143 on SIGTERM

On a terminal the view takes the alternate screen and stdin is read a key at a time
without echo (cbreak: Ctrl-C still interrupts); select() waits for a key with the time
left until the next poll as its timeout, so a key redraws at once and polls keep their
pace. When stdin is not a terminal no key is read: the view refreshes until Ctrl-C.

Every way out restores the terminal: the keyboard's settings, the main screen and the
cursor. `q` exits 0; Ctrl-C exits 130, as it ends every command; SIGTERM exits 143
(128 + 15, the shell's code for a process that SIGTERM ended) after the restoration,
which the default action would skip (it left the alternate screen up and the cursor
hidden).
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Protocol

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment
from rich.style import Style

QUIT = "q"
TERMINATED = 143  # 128 + SIGTERM
INTERRUPTED = 130  # 128 + SIGINT


class Screen(Protocol):
    def poll(self) -> None: ...

    def frame(self, console: Console, keys: bool) -> RenderableType: ...  # keys: whether keys are read

    def key(self, key: str) -> None: ...


Line = list[Segment]


class Lines:
    """Lines rendered earlier (a whole frame: the screen's size exactly), yielded again as they are."""

    def __init__(self, lines: list[Line]) -> None:
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for number, line in enumerate(self.lines):
            if number:
                yield Segment.line()
            yield from line


def cut(lines: list[Line], room: int, width: int) -> list[Line]:
    """At most `room` lines of `lines` (`width` cells each), the last saying how many are kept back."""
    if len(lines) <= room:
        return lines
    kept = lines[:max(room - 1, 0)]
    note = f"… {len(lines) - len(kept)} more lines: a taller terminal shows them"
    return kept + [Segment.adjust_line_length([Segment(note, Style(dim=True))], width)]


def render(part: RenderableType, console: Console, width: int) -> list[Line]:
    """`part` as lines `width` cells wide, each padded to it."""
    return console.render_lines(part, console.options.update(width=width, height=None), pad=True)


class Terminated(Exception):
    """SIGTERM arrived: raised in the main thread so that every `with` on the way out restores what it changed."""


def _keys_of(chunk: str) -> list[str]:
    """The keys in what one read returned; an escape sequence (an arrow, a function key) is none of ours."""
    if chunk.startswith("\x1b"):
        return []
    return ["tab" if char == "\t" else char.lower() for char in chunk]


class Keyboard:
    """Single keys from a terminal, without waiting for Enter; on anything else, only the waiting."""

    def __init__(self, stream: IO[str]) -> None:
        self._fd: int | None = None  # None: no key is read (not a terminal, or it went away)
        self._saved: tuple[int, list[Any]] | None = None
        try:
            is_terminal = stream.isatty()
        except (AttributeError, ValueError):  # a replaced or closed stdin
            is_terminal = False
        if is_terminal:
            import termios
            import tty

            self._fd = stream.fileno()
            self._saved = (self._fd, termios.tcgetattr(self._fd))
            tty.setcbreak(self._fd, termios.TCSANOW)

    @property
    def reading(self) -> bool:
        return self._fd is not None

    def wait(self, timeout: float) -> list[str]:
        """The keys pressed within `timeout` seconds (returns at the first), or [] when none was."""
        if self._fd is None:
            time.sleep(timeout)
            return []
        if not select.select([self._fd], [], [], timeout)[0]:
            return []
        chunk = os.read(self._fd, 64)
        if not chunk:  # the terminal is gone: no key will come, wait as without one
            self._fd = None
            return []
        return _keys_of(chunk.decode("utf-8", errors="replace"))

    def restore(self) -> None:
        if self._saved is not None:
            import termios

            fd, settings = self._saved
            try:
                termios.tcsetattr(fd, termios.TCSADRAIN, settings)
            except termios.error:  # the terminal closed under us: nothing left to restore
                pass
            self._saved = None


@contextmanager
def _terminated_raises() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the restoration short
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(view: Screen, console: Console, interval: float) -> int:
    """Polls `view` every `interval` seconds and draws it until q, Ctrl-C or SIGTERM; the exit code."""
    from rich.live import Live

    keyboard = None
    try:
        with _terminated_raises():
            keyboard = Keyboard(sys.stdin)
            # The alternate screen on a terminal: redrawn in place, no scrolling, no flicker.
            with Live(console=console, screen=console.is_terminal, auto_refresh=False,
                      redirect_stdout=False, redirect_stderr=False) as live:
                next_poll = 0.0
                while True:
                    if time.monotonic() >= next_poll:
                        next_poll = time.monotonic() + interval
                        view.poll()
                    live.update(view.frame(console, keyboard.reading), refresh=True)
                    keys = keyboard.wait(max(next_poll - time.monotonic(), 0.0))
                    if QUIT in keys:
                        return 0
                    for key in keys:
                        view.key(key)
    except KeyboardInterrupt:
        return INTERRUPTED
    except Terminated:
        return TERMINATED
    finally:
        if keyboard is not None:
            keyboard.restore()
