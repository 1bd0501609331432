"""A replica spawned before the event loop ran (early.py), seen as an asyncio.subprocess.Process.

    process = await AdoptedProcess.of(spawn)     # spawn: an early.EarlySpawn
    chunk = await process.stdout.read(65_536)    # its pipes as StreamReaders
    code = await process.wait()                  # its exit code (-N for signal N), as asyncio gives it
    process.pid, process.returncode

What ManagedProcess asks of the processes it spawns itself, and no more. Its end is learnt
from the pidfd it was spawned with: readable once that process (and no later one with its
pid) has exited, when it is reaped here. `wait()` may be awaited by several tasks, and
cancelling one of them leaves the others waiting.
"""

from __future__ import annotations

import asyncio
import os

from tooloo_cli.supervisor.early import EarlySpawn

READ_LIMIT = 2**16  # asyncio.subprocess's own
UNKNOWN_EXIT = 255  # what asyncio reports for a child reaped by someone else


class AdoptedProcess:
    def __init__(self, spawn: EarlySpawn, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader) -> None:
        self._popen = spawn.popen
        self._pidfd = spawn.pidfd
        self.pid = spawn.popen.pid
        self.returncode: int | None = None
        self.stdout = stdout
        self.stderr = stderr
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._loop.add_reader(self._pidfd, self._reap)

    @classmethod
    async def of(cls, spawn: EarlySpawn) -> AdoptedProcess:
        """Takes over `spawn`: its pipes read on this loop, its end watched. Should that fail, what it
        connected is closed: the caller then ends the process and its pipes (EarlySpawn.end)."""
        readers: list[tuple[asyncio.StreamReader, asyncio.BaseTransport]] = []
        try:
            for pipe in (spawn.popen.stdout, spawn.popen.stderr):
                readers.append(await _reader(pipe))
            return cls(spawn, readers[0][0], readers[1][0])
        except BaseException:
            for _, transport in readers:
                transport.close()
            raise

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped already, by nothing of ours: gone, its code unknown (asyncio says 255)
            pid, status = self.pid, None
        if pid == 0:  # not exited after all
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        # Popen's own record too: it must never look for that pid again (subprocess._cleanup), which may be
        # another process's by then.
        self.returncode = self._popen.returncode = UNKNOWN_EXIT if status is None else os.waitstatus_to_exitcode(status)
        self._exited.set_result(self.returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)


async def _reader(pipe: object) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_LIMIT, loop=loop)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe)
    return reader, transport
