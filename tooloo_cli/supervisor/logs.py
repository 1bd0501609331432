"""Per-service log files: each line stamped as it arrives, rotated by size, read back by time.

    log = RotatingLog(paths.log("budget"), max_bytes=10 * 1024 * 1024, backups=3)
    log.write(encode(time.time(), "stdout", [b"GET /health 200 0.4ms -"]))
    read(paths.log("budget"), last=20)               # the last 20 entries, across a rotation
    read(paths.log("budget"), since=time.time() - 600)  # everything of the last ten minutes

A line of a log file is `2026-12-03T13:11:40.123456Z stdout GET /health 200 0.4ms -`: when
the supervisor read it (UTC, to the microsecond), the stream it came from (`stdout`,
`stderr`, or `supervisor` for the supervisor's own events: started, exited, restarting,
failed, stopped) and the line as the service wrote it. A service's lines are stamped on
arrival, so a line its process held in a buffer (a service's access log is written at most
50 ms late) carries the time it reached the supervisor. A line of a file written before
stamps (or by hand) reads as stdout, at the time of the stamped line before it.

Rotation renames budget.log → budget.log.1 → … → budget.log.N (the oldest is dropped).
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime, time as time_of_day, timezone
from pathlib import Path
from typing import BinaryIO, NamedTuple

STREAMS = ("stdout", "stderr", "supervisor")
LONGEST_LINE = 65_536  # bytes a line may reach before it is written without its end
_TEXT_FROM = len("2026-12-03T13:11:40.123456Z stdout")  # a stamped line is longer: a space, then its text
_SPAN = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_TIME_OF_DAY = re.compile(r"(\d\d?):(\d\d)(?::(\d\d))?")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Entry(NamedTuple):
    at: float | None  # seconds since the epoch; None for an unstamped line with no stamped one before it
    stream: str  # one of STREAMS
    text: str


class RotatingLog:
    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file = _open_private(path)
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        if self._size + len(data) > self.max_bytes and self._size > 0:
            self._rotate()
        self._file.write(data)
        self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        if self.backups > 0:
            for number in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{number}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{number + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._file = _open_private(self.path)
        self._size = 0

    def close(self) -> None:
        self._file.close()


def _open_private(path: Path) -> BinaryIO:
    """An unbuffered append-only file readable by its owner only (logs may hold request paths)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab", buffering=0)


class Lines:
    """The whole lines in a stream's successive chunks; a partial line waits for the rest of it.

    A line longer than LONGEST_LINE is let out as it is, so that output with no newline in
    sight cannot grow the supervisor without bound.
    """

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        if len(self._partial) > LONGEST_LINE:
            lines.append(self._partial)
            self._partial = b""
        return lines

    def rest(self) -> list[bytes]:
        """The partial line at the stream's end, if there is one."""
        rest, self._partial = self._partial, b""
        return [rest] if rest else []


def stamp(at: float) -> str:
    """`at` as the log files write it: ISO 8601 in UTC, to the microsecond."""
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode(at: float, stream: str, lines: list[bytes]) -> bytes:
    """Lines of one stream, read at `at`, as they go into a log file."""
    prefix = f"{stamp(at)} {stream} ".encode()
    return b"".join(prefix + line + b"\n" for line in lines)


def parse(line: str, previous: float | None = None) -> Entry:
    """A log file's line; an unstamped one reads as stdout at `previous` (the line before's time)."""
    # By position, not by a regular expression over the whole line: a `--since` reads every line.
    if len(line) > _TEXT_FROM and line[26] == "Z" and line[27] == " " and line[10] == "T":
        stream, _, text = line[28:].partition(" ")
        if stream in STREAMS:
            try:
                return Entry(datetime.fromisoformat(line[:27]).timestamp(), stream, text)
            except ValueError:
                pass
    return Entry(previous, "stdout", line)


def files(path: Path) -> list[Path]:
    """A log and its rotated backups that exist, oldest first."""
    backups = sorted((int(candidate.name.rpartition(".")[2]), candidate)
                     for candidate in path.parent.glob(f"{glob.escape(path.name)}.*")
                     if candidate.name.rpartition(".")[2].isdigit())
    return [candidate for _, candidate in reversed(backups)] + ([path] if path.exists() else [])


def lines_of(path: Path, whole: bool = False, end: Position | None = None) -> Iterator[str]:
    """The lines of a log as written, oldest first: of its last two files (a tail needs no more), or
    with `whole` of every backup; with `end` (a Follower's position), only up to it: the file it
    names up to its offset, and none after it (the follower reads those), or, when it names none
    of them, all but the current file (which the follower reads from its start).

    Every file is opened before the first line is given: a file renamed by a rotation meanwhile is
    still the one it was (its handle keeps it), however long the reader takes. Lines are read one
    at a time, and split on newlines only: a carriage return inside a line (a progress bar's) stays
    in it, where reading as text would begin a new line there, one a service could make look stamped.
    """
    opened = []
    for candidate in files(path) if whole else files(path)[-2:]:
        try:
            opened.append(open(candidate, "rb"))  # noqa: SIM115  (closed in `finally`)
        except FileNotFoundError:  # rotated away since it was listed
            continue
    try:
        chosen, limits = opened, [None] * len(opened)  # a file's lines up to a byte offset, or all of them
        if end is not None:
            inodes = [os.fstat(handle.fileno()).st_ino for handle in opened]
            if end.inode in inodes:
                cut = inodes.index(end.inode)
                chosen, limits = opened[:cut + 1], [*limits[:cut], end.offset]
            elif opened and opened[-1].name == str(path):
                chosen = opened[:-1]
        for handle, limit in zip(chosen, limits):
            read = 0
            for raw in handle:
                read += len(raw)
                if limit is not None and read > limit:
                    break
                yield raw.rstrip(b"\n").decode("utf-8", errors="replace")
    finally:
        for handle in opened:
            handle.close()


def entries(path: Path, since: float | None = None, until: float | None = None,
            keep: re.Pattern[str] | None = None, end: Position | None = None) -> Iterator[Entry]:
    """The entries of a log from `since` to `until` whose line matches `keep`, oldest first, read as
    they are asked for (a window over 40 MiB of logs is not held in memory)."""
    filtered = since is not None or until is not None or keep is not None
    previous: float | None = None
    for line in lines_of(path, whole=filtered, end=end):
        entry = parse(line, previous)
        previous = entry.at
        if wanted(entry, since, until, keep):
            yield entry


def read(path: Path, last: int | None = None, since: float | None = None, until: float | None = None,
         keep: re.Pattern[str] | None = None, end: Position | None = None) -> list[Entry]:
    """The `last` of `entries(...)` (every one when None)."""
    return list(deque(entries(path, since, until, keep, end), maxlen=last))


def wanted(entry: Entry, since: float | None, until: float | None, keep: re.Pattern[str] | None) -> bool:
    if since is not None and (entry.at is None or entry.at < since):
        return False
    if until is not None and entry.at is not None and entry.at > until:
        return False
    return keep is None or keep.search(entry.text) is not None


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a log as they are written, reaching into the previous file after a rotation."""
    return list(deque(lines_of(path), maxlen=lines))


class Position(NamedTuple):
    inode: int
    offset: int


class Follower:
    """The entries appended to a log since the last look, across its rotations (and before it exists).

    It keeps the file it reads open: after a rotation, what was added to that file since the
    last look is read from its handle, wherever the file went (renamed to `.1`, or unlinked when
    no backup is kept: an inode number a new file could reuse at once), then the new file from
    its start. (One rotation between two looks, a tenth of a second apart for `logs -f`: a log
    rotates at megabytes.) `position` is where it will go on from (the file's inode, an offset
    after a whole line): what is read up to it beforehand (`read(..., end=position)`) is not read again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = _open_or_none(path)
        self._offset = _after_last_line(self._handle) if self._handle is not None else 0
        self._previous: float | None = None

    @property
    def position(self) -> Position:
        if self._handle is None:
            return Position(0, 0)
        return Position(os.fstat(self._handle.fileno()).st_ino, self._offset)

    def new(self) -> list[Entry]:
        if self._handle is None:
            self._handle, self._offset = _open_or_none(self.path), 0
            if self._handle is None:
                return []
        data = self._whole_lines()
        current = _stat(self.path)
        if current is not None and current.st_ino != os.fstat(self._handle.fileno()).st_ino:
            # Rotated since the look above: the old file is complete now; its last lines, then the new file.
            data += self._whole_lines()
            self._handle.close()
            self._handle, self._offset = _open_or_none(self.path), 0
            if self._handle is not None:
                data += self._whole_lines()
        found = []
        for raw in data.split(b"\n")[:-1]:  # whole lines only, split as lines_of splits them
            entry = parse(raw.decode("utf-8", errors="replace"), self._previous)
            self._previous = entry.at
            found.append(entry)
        return found

    def _whole_lines(self) -> bytes:
        """What its file has after the offset, up to the last newline (a line being written waits)."""
        assert self._handle is not None
        if os.fstat(self._handle.fileno()).st_size < self._offset:  # truncated in place: from its start
            self._offset = 0
        self._handle.seek(self._offset)
        data = self._handle.read()
        data = data[:data.rfind(b"\n") + 1]
        self._offset += len(data)
        return data

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def _after_last_line(handle: BinaryIO) -> int:
    """The offset just after the file's last newline: a line being written is the follower's to read."""
    size = os.fstat(handle.fileno()).st_size
    handle.seek(max(size - 2 * LONGEST_LINE, 0))
    tail = handle.read()
    return size - len(tail) + tail.rfind(b"\n") + 1


def _open_or_none(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb")  # noqa: SIM115  (the Follower's, closed by its close())
    except FileNotFoundError:
        return None


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def moment(text: str, now: float) -> float:
    """`--since`/`--until`: a span back from `now` (`90s`, `10m`, `1h30m`, `2d`), or a date and
    time in ISO 8601 (`2026-12-03`, `2026-12-03T13:00`, with `Z` or an offset for other than
    local time), or a time of today (`13:00`, `13:00:30`). ValueError saying what it takes."""
    text = text.strip()
    spans = _SPAN.findall(text)
    if spans and "".join(number + unit for number, unit in spans) == text:
        return now - sum(float(number) * _UNIT_SECONDS[unit] for number, unit in spans)
    try:
        if of_day := _TIME_OF_DAY.fullmatch(text):
            hour, minute, second = (int(part or 0) for part in of_day.groups())
            moment = datetime.combine(datetime.fromtimestamp(now).date(), time_of_day(hour, minute, second))
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a span back from now (90s, 10m, 1h30m, 2d) nor a time "
                         f"(2026-12-03T13:00, 13:00)") from None
    try:
        return moment.timestamp()
    except (ValueError, OverflowError):  # a date this machine's clock cannot hold (year 1, in local time)
        raise ValueError(f"{text!r} is a time out of the range this machine's clock holds") from None


def day_and_time(at: float, now: float | None = None) -> str:
    """How `tooloo logs` shows a moment: the local time to the millisecond, with its date when not today."""
    local = datetime.fromtimestamp(at)
    shown = local.strftime("%H:%M:%S.%f")[:-3]
    today = datetime.fromtimestamp(time.time() if now is None else now).date()
    return shown if local.date() == today else f"{local.date().isoformat()} {shown}"

