"""A full-screen view redrawn in place, with single keys: what `observe --watch` and `top` share.

    class View:                                  # the Screen protocol
        def fetch(self) -> Any: ...              # what the next frame shows (in a thread of its own)
        def take(self, fetched) -> None: ...     # fetch's result, in the loop's thread
        def frame(self, console, keys) -> RenderableType: ...   # keys: whether a key is read
        def key(self, key: str) -> None: ...     # "tab", "1", "m" ...
    code = run(View(), console, interval=1.0)    # 0 on q, 130 on Ctrl-C, 143 on SIGTERM

A poll runs in a daemon thread, one at a time, while the loop waits in select() on the
keyboard, the signals' wakeup pipe and the poll's end: a poll may take all of the observe
timeout (a service that takes the connection and never answers), and a key, a resize, q,
Ctrl-C or SIGTERM are still answered at once; the loop leaves without waiting for a poll
that is out. The first frame is drawn before the first poll ends (the header, "polling…"),
each poll's end draws one, and the next poll starts `interval` seconds after the last one
started, or when it ends if it took longer.

When stdin and stdout are both terminals the view takes the alternate screen and stdin is
read a key at a time without echo (cbreak: Ctrl-C still interrupts); a key redraws at once.
An escape sequence (an arrow, a function key) is no key, wherever it is in a read and when
a read cuts it in two. With stdout not a terminal (a pipe, a file), each frame is printed
as it is made, so what reads it sees the frames as they come; with either not a terminal,
no key is read (the terminal's settings are left alone) and the view refreshes until Ctrl-C.

The signals are noted, never acted on where they land: a handler only records that SIGTERM
or SIGINT came, and Python's wakeup fd (a pipe in the select() set) wakes the loop, which
then leaves as from q. So no exception arrives in the middle of drawing or restoring, and
every way out restores the terminal in order: the main screen and the cursor, the
keyboard's settings, then the signal handlers. `q` exits 0; Ctrl-C exits 130, as it ends
every command; SIGTERM exits 143 (128 + 15, the shell's code for a process that SIGTERM
ended) after the restoration, which the default action would skip. SIGWINCH wakes the loop
the same way: a resized terminal is redrawn at once, at its new size, with the last figures.
SIGTSTP (Ctrl-Z) gives the terminal back as q does, then stops the process; continued (fg),
the view takes the screen and the keyboard again and redraws.
"""

from __future__ import annotations

import codecs
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Protocol

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment
from rich.style import Style

if TYPE_CHECKING:
    from rich.live import Live

QUIT = "q"
TERMINATED = 143  # 128 + SIGTERM
INTERRUPTED = 130  # 128 + SIGINT


class Screen(Protocol):
    def fetch(self) -> Any: ...  # in a thread of its own: touches nothing frame() reads

    def take(self, fetched: Any) -> None: ...  # in the loop's thread, with what fetch returned

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

    def wait(self, timeout: float | None, *wakeups: int | None) -> list[str]:
        """The keys pressed within `timeout` seconds (None: no limit), or [] when none was; returns at the
        first, and when one of `wakeups` (file descriptors of non-blocking pipes, drained here) is readable."""
        watched = [fd for fd in (self._fd, *wakeups) if fd is not None]
        ready = select.select(watched, [], [], timeout)[0]  # with nothing watched, a sleep
        for fd in ready:
            if fd != self._fd:
                _drain(fd)
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
    """SIGTERM and SIGINT recorded as the exit code they ask for, SIGTSTP as `stop`, and SIGWINCH, each waking
    a select() on `wakeup` (signal.set_wakeup_fd): a handler that raised would land anywhere, in Live.stop()
    among them.

    Only the main thread may install handlers: entered in another, it notes nothing and `wakeup` is None.
    Every step of __enter__ is undone if a later one fails (or a Ctrl-C lands between two), and __exit__
    undoes each step even when one before it raised."""

    NOTED = {signal.SIGINT: INTERRUPTED, signal.SIGTERM: TERMINATED, signal.SIGWINCH: None, signal.SIGTSTP: None}

    def __init__(self) -> None:
        self.code: int | None = None  # the exit code a signal asked for; the first one's
        self.stop = False  # SIGTSTP (Ctrl-Z) came: the loop gives the terminal back, then stops the process
        self.wakeup: int | None = None
        self._undo = ExitStack()

    def _note(self, signum: int, frame: Any) -> None:
        self.stop = self.stop or signum == signal.SIGTSTP
        code = self.NOTED[signum]
        if self.code is None and code is not None:
            self.code = code

    def __enter__(self) -> Signals:
        if threading.current_thread() is not threading.main_thread():
            return self
        with ExitStack() as undo:
            wakeup, write = os.pipe()
            undo.callback(os.close, wakeup)
            undo.callback(os.close, write)
            os.set_blocking(wakeup, False)
            os.set_blocking(write, False)  # set_wakeup_fd's requirement: a full pipe must not block a signal
            undo.callback(signal.set_wakeup_fd, signal.set_wakeup_fd(write, warn_on_full_buffer=False))
            for signum in self.NOTED:
                previous = signal.signal(signum, self._note)
                # None: a handler installed from C, which Python cannot put back; the default is what is left.
                undo.callback(signal.signal, signum, signal.SIG_DFL if previous is None else previous)
            self._undo = undo.pop_all()
        self.wakeup = wakeup
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.wakeup = None
        self._undo.close()


class _Polling:
    """The view's polls, each in a daemon thread of its own and never two at once: a poll can take all of
    observe.timeout (name resolution longer), and the loop must answer a key or a signal meanwhile.

    `wakeup` becomes readable when a poll ends. A poll still out when the loop leaves is abandoned (the
    process ends without waiting for it); its thread then closes the pipe, which it would write to otherwise.
    """

    def __init__(self, view: Screen) -> None:
        self._view = view
        self.wakeup, self._write = os.pipe()
        os.set_blocking(self.wakeup, False)
        self._thread: threading.Thread | None = None  # the poll out, or ended and not taken yet
        self._ended = threading.Event()
        self._outcome: tuple[Any, BaseException | None] = (None, None)  # what fetch returned, or raised
        self._lock = threading.Lock()  # between an ending poll and the loop leaving: who closes the pipe
        self._abandoned = False

    @property
    def out(self) -> bool:
        """Whether a poll was started and its figures not taken yet."""
        return self._thread is not None

    def start(self) -> None:
        assert self._thread is None, "a poll is out already"
        self._ended.clear()
        self._thread = threading.Thread(target=self._fetch, name="tooloo-poll", daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        try:
            self._outcome = (self._view.fetch(), None)
        except BaseException as exc:  # raised again by take, in the loop's thread
            self._outcome = (None, exc)
        with self._lock:
            self._ended.set()
            if self._abandoned:
                self._close()
            else:
                os.write(self._write, b"\0")

    def take(self) -> bool:
        """Hands the view what the ended poll fetched (raising what it raised); False while none ended."""
        if self._thread is None or not self._ended.is_set():
            return False
        self._thread = None
        (fetched, error), self._outcome = self._outcome, (None, None)
        if error is not None:
            raise error
        self._view.take(fetched)
        return True

    def _close(self) -> None:
        os.close(self.wakeup)
        os.close(self._write)

    def __enter__(self) -> _Polling:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        with self._lock:
            if self._thread is not None and not self._ended.is_set():
                self._abandoned = True
            else:
                self._close()


def _loop(view: Screen, console: Console, interval: float, signals: Signals, keyboard: Keyboard,
          show: Callable[[RenderableType], None], stop: Callable[[], None]) -> int:
    with _Polling(view) as polling:
        next_poll = 0.0
        redraw = True  # the first frame comes at once, before the first poll ends: never a blank screen
        while signals.code is None:
            redraw = polling.take() or redraw
            if not polling.out and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + interval
                polling.start()
            if redraw:
                show(view.frame(console, keyboard.reading))
            # While a poll is out, only its end, a key or a signal wakes the loop; the next poll starts after it.
            deadline = None if polling.out else next_poll
            keys = keyboard.wait(None if deadline is None else max(deadline - time.monotonic(), 0.0),
                                 signals.wakeup, polling.wakeup)
            if QUIT in keys:
                return 0
            for key in keys:
                view.key(key)
            # Woken before the next poll is due: a key, a resize or a poll's end, each shown at once. At the
            # deadline itself the frame waits for that poll's figures: nothing changed meanwhile.
            redraw = bool(keys) or deadline is None or time.monotonic() < deadline
            if signals.stop:
                signals.stop = False
                stop()
                redraw = True  # the screen comes back blank, perhaps at another size
        return signals.code


def _stopped(keyboard: Keyboard, live: Live | None) -> None:
    """Ctrl-Z: the terminal given back as on q (the main screen, the keyboard's settings), the process
    stopped as SIGTSTP would have, and on SIGCONT (fg, bg) the view taken up again."""
    if live is not None:
        live.stop()
    keyboard.__exit__(None, None, None)
    os.kill(os.getpid(), signal.SIGSTOP)  # returns once continued
    keyboard.__enter__()
    if live is not None:
        live.start()


def run(view: Screen, console: Console, interval: float) -> int:
    """Polls `view` every `interval` seconds and draws it until q, Ctrl-C or SIGTERM; the exit code."""
    try:
        from rich.live import Live

        # Entered in this order, left in the reverse: the handlers, then the keyboard, then the screen.
        with Signals() as signals, Keyboard(sys.stdin if console.is_terminal else None) as keyboard:
            if not console.is_terminal:  # Live would draw nothing before it stops
                return _loop(view, console, interval, signals, keyboard, console.print,
                             lambda: _stopped(keyboard, None))
            # The alternate screen: redrawn in place, no scrolling, no flicker.
            with Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False,
                      redirect_stderr=False) as live:
                return _loop(view, console, interval, signals, keyboard,
                             lambda frame: live.update(frame, refresh=True), lambda: _stopped(keyboard, live))
    except KeyboardInterrupt:  # a Ctrl-C before the handlers are in place or after they are put back
        return INTERRUPTED
