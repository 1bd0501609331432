"""A full-screen view redrawn in place, with single keys: what `observe --watch` and `top` share.

    class View:                                  # the Screen protocol
        def poll(self) -> None: ...              # fetch what the next frame shows
        def frame(self, console, keys) -> RenderableType: ...   # keys: whether a key is read
        def key(self, key: str) -> None: ...     # "tab", "1", "m" ...
    code = run(View(), console, interval=1.0)    # 0 on q, 130 on Ctrl-C, 143 on SIGTERM

When stdin and stdout are both terminals the view takes the alternate screen and stdin is
read a key at a time without echo (cbreak: Ctrl-C still interrupts); select() waits for a
key with the time left until the next poll as its timeout, so a key redraws at once and
polls keep their pace. An escape sequence (an arrow, a function key) is no key, wherever it
is in a read and when a read cuts it in two. With stdout not a terminal (a pipe, a file),
each frame is printed as it is made, so what reads it sees the frames as they come; with
either not a terminal, no key is read (the terminal's settings are left alone) and the
view refreshes until Ctrl-C.

The signals are noted, never acted on where they land: a handler only records that SIGTERM
or SIGINT came, and Python's wakeup fd (a pipe in the select() set) wakes the loop, which
then leaves as from q. So no exception arrives in the middle of drawing or restoring, and
every way out restores the terminal in order: the main screen and the cursor, the
keyboard's settings, then the signal handlers. `q` exits 0; Ctrl-C exits 130, as it ends
every command; SIGTERM exits 143 (128 + 15, the shell's code for a process that SIGTERM
ended) after the restoration, which the default action would skip. SIGWINCH wakes the loop
the same way: a resized terminal is redrawn at once, at its new size.
"""

from __future__ import annotations

import codecs
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from types import TracebackType
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


class Keys:
    """The keys in what successive reads return, escape sequences left out: CSI (ESC [ ... final) and SS3
    (ESC O final), wherever they begin, and their rest when a read ended inside one; a lone ESC is dropped."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # "²" may come in two reads
        self._state = ""  # "": between keys; "esc": after ESC; "sequence": inside a CSI or SS3 sequence

    def feed(self, chunk: bytes) -> list[str]:
        keys = []
        for char in self._decoder.decode(chunk):
            if self._state == "sequence":
                # Parameters and intermediates (0x20-0x3f) go on; the final byte, or anything else, ends it.
                if not " " <= char <= "?":
                    self._state = ""
                continue
            if self._state == "esc":
                self._state = ""
                if char in "[O":
                    self._state = "sequence"
                    continue
            if char == "\x1b":
                self._state = "esc"
            else:
                keys.append("tab" if char == "\t" else char.lower())
        return keys


class Keyboard:
    """Single keys from a terminal, without waiting for Enter; on anything else (or None), only the waiting.
    A context manager: cbreak is set on entry and the terminal's settings put back on exit."""

    def __init__(self, stream: IO[str] | None) -> None:
        self._fd: int | None = None  # None: no key is read (not a terminal, or it went away)
        self._saved: list[Any] | None = None
        self._keys = Keys()
        try:
            if stream is not None and stream.isatty():
                self._fd = stream.fileno()
        except (AttributeError, ValueError):  # a replaced or closed stdin
            pass

    @property
    def reading(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> Keyboard:
        if self._fd is not None:
            import termios
            import tty

            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd, termios.TCSANOW)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._saved is not None and self._fd is not None:
            import termios

            try:
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            except termios.error:  # the terminal closed under us: nothing left to restore
                pass
        self._saved = None

    def wait(self, timeout: float, wakeup: int | None = None) -> list[str]:
        """The keys pressed within `timeout` seconds (returns at the first, or when `wakeup`, a file
        descriptor, becomes readable), or [] when none was."""
        watched = [fd for fd in (self._fd, wakeup) if fd is not None]
        if not watched:
            time.sleep(timeout)
            return []
        ready = select.select(watched, [], [], timeout)[0]
        if wakeup is not None and wakeup in ready:
            _drain(wakeup)
        if self._fd is None or self._fd not in ready:
            return []
        chunk = os.read(self._fd, 64)
        if not chunk:  # the terminal is gone: no key will come, wait as without one
            self._fd = None
            return []
        return self._keys.feed(chunk)


def _drain(fd: int) -> None:
    """Reads what a non-blocking pipe holds, so that select() waits again."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


class Signals:
    """SIGTERM and SIGINT recorded as the exit code they ask for, and SIGWINCH, each waking a select() on
    `wakeup` (signal.set_wakeup_fd): a handler that raised would land anywhere, in Live.stop() among them."""

    NOTED = {signal.SIGTERM: TERMINATED, signal.SIGINT: INTERRUPTED, signal.SIGWINCH: None}

    def __init__(self) -> None:
        self.code: int | None = None  # the exit code a signal asked for; the first one's
        self.wakeup = -1
        self._write = -1
        self._previous_fd = -1
        self._previous: dict[int, Any] = {}

    def _note(self, signum: int, frame: Any) -> None:
        code = self.NOTED[signum]
        if self.code is None and code is not None:
            self.code = code

    def __enter__(self) -> Signals:
        self.wakeup, self._write = os.pipe()
        os.set_blocking(self.wakeup, False)
        os.set_blocking(self._write, False)  # set_wakeup_fd's requirement: a full pipe must not block a signal
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for signum in self.NOTED:
            self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self.wakeup)
        os.close(self._write)


def _loop(view: Screen, console: Console, interval: float, signals: Signals, keyboard: Keyboard,
          show: Callable[[RenderableType], None]) -> int:
    next_poll = 0.0
    while signals.code is None:
        if time.monotonic() >= next_poll:
            next_poll = time.monotonic() + interval
            view.poll()
        show(view.frame(console, keyboard.reading))
        keys = keyboard.wait(max(next_poll - time.monotonic(), 0.0), signals.wakeup)
        if QUIT in keys:
            return 0
        for key in keys:
            view.key(key)
    return signals.code


def run(view: Screen, console: Console, interval: float) -> int:
    """Polls `view` every `interval` seconds and draws it until q, Ctrl-C or SIGTERM; the exit code."""
    try:
        from rich.live import Live

        # Entered in this order, left in the reverse: the screen, then the keyboard, then the handlers.
        with Signals() as signals, Keyboard(sys.stdin if console.is_terminal else None) as keyboard:
            if not console.is_terminal:  # Live would draw nothing before it stops
                return _loop(view, console, interval, signals, keyboard, console.print)
            # The alternate screen: redrawn in place, no scrolling, no flicker.
            with Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False,
                      redirect_stderr=False) as live:
                return _loop(view, console, interval, signals, keyboard,
                             lambda frame: live.update(frame, refresh=True))
    except KeyboardInterrupt:  # a Ctrl-C before the handlers are in place or after they are put back
        return INTERRUPTED
