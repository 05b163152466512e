"""Following a local container's log as it grows (`GET containers/{id}/logs?follow=1`, `cellhop logs -f`).

The log is a file the server writes (container_log.py): its last lines first, then every poll
(POLL_SECONDS) reads what was appended since, through the descriptor it holds, so a rotation
(container.log becoming container.log.1) loses nothing: the old file is read to its end before the
new one is opened. Output is masked again on the way (a MaskedLog, so a value split across two reads
is still found) although the file was masked as it was written. Follows until the container has
exited (its last output read), or the requester goes away.
"""

from __future__ import annotations

import asyncio
import os

from ..container import Phase
from .container_exec import Collector, ExecNotSupported
from .container_log import LOG_NAME, ROTATED_SUFFIX, MaskedLog, _open_in

POLL_SECONDS = 0.25
FIRST_BYTES = 1 << 20  # the most the opening tail reads


def _tail(fd: int, lines: int, end: int) -> bytes:
    if lines <= 0 or end == 0:
        return b""
    start = max(0, end - FIRST_BYTES)
    data = os.pread(fd, end - start, start)
    if start:
        data = data[data.find(b"\n") + 1:]  # never half a line
    kept = data.split(b"\n")
    if data.endswith(b"\n"):
        return b"\n".join(kept[:-1][-lines:]) + b"\n"
    return b"\n".join(kept[-lines:])


def _read_from(fd: int, offset: int) -> tuple[bytes, int]:
    chunks = []
    while True:
        chunk = os.pread(fd, 65536, offset)
        if not chunk:
            return b"".join(chunks), offset
        chunks.append(chunk)
        offset += len(chunk)


async def follow(manager, container, tail: int, send, gone) -> None:
    """Send {"log": text} lines: the last `tail` lines, then new output, until the container ends
    ({"exited": true, "status": ...}) or `gone` is set."""
    directory = container.directory
    if directory is None or container.node is not None:
        raise ExecNotSupported(f"the {manager.runtime.name} runtime's logs cannot be followed; read them with "
                               "GET containers/{id}/logs")
    lines: list[dict] = []
    sink = MaskedLog(Collector("log", lambda line: lines.append({"log": line["text"]})),
                     container.secret_env.values())

    async def flush():
        while lines:
            await send(lines.pop(0))

    fd = None
    offset = 0
    try:
        while fd is None:
            try:
                fd = _open_in(directory, LOG_NAME, os.O_RDONLY)
            except FileNotFoundError:
                if container.phase == Phase.EXITED:
                    break
                await asyncio.sleep(POLL_SECONDS)
        if fd is not None:
            offset = os.fstat(fd).st_size
            sink.write(_tail(fd, tail, offset))
        await flush()
        while fd is not None and not gone.is_set():
            ended = container.phase == Phase.EXITED
            if ended:  # its last output reaches the file once the log pumps are done
                await asyncio.get_running_loop().run_in_executor(None, manager.runtime.read_log, container, 1)
            data, offset = _read_from(fd, offset)
            sink.write(data)
            try:
                replaced = os.stat(directory / LOG_NAME).st_ino != os.fstat(fd).st_ino
            except FileNotFoundError:
                replaced = False
            if replaced:  # rotated: the rest of the old file was read above; the new one from its start
                data, offset = _read_from(fd, offset)
                sink.write(data)
                try:
                    once = os.stat(directory / (LOG_NAME + ROTATED_SUFFIX)).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    once = False
                if not once:  # rotated twice between two reads: a whole file of it went by unread
                    sink.write(b"\n[... cellhop: part of the log went by faster than it could be followed; "
                               b"GET containers/{id}/logs has what is kept]\n")
                os.close(fd)
                fd, offset = _open_in(directory, LOG_NAME, os.O_RDONLY), 0
                continue
            await flush()
            if ended:
                break
            await asyncio.sleep(POLL_SECONDS)
    finally:
        if fd is not None:
            os.close(fd)
    sink.close()
    await flush()
    if not gone.is_set() and container.phase == Phase.EXITED:
        status = container.exit_status
        await send({"exited": True, "status": status.to_dict() if status else None})
