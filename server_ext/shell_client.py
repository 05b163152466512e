"""This terminal connected to a terminal of the Jupyter server (terminado's websocket protocol), for
`cellhop shell`: what is typed goes as ["stdin", text] (raw mode: Ctrl-C and Ctrl-D reach the shell, not
this process), ["stdout", text] comes back, and the window's size goes as ["set_size", rows, cols] at the
start and on each SIGWINCH. Ends when the server says ["disconnect", ...] (the shell exited, or the
container stopped) or closes the socket; the terminal is then deleted on the server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from urllib.parse import quote


def _size() -> tuple[int, int]:
    size = shutil.get_terminal_size((80, 24))
    return size.lines, size.columns


async def _session(base: str, token: str, name: str) -> int:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    url = base.replace("http", "ws", 1) + f"terminals/websocket/{quote(name, safe='')}"
    socket = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}))
    loop = asyncio.get_running_loop()
    interactive = sys.stdin.isatty()

    def send(message) -> None:
        socket.write_message(json.dumps(message))

    def on_input() -> None:
        data = os.read(sys.stdin.fileno(), 4096)
        if data:
            send(["stdin", data.decode(errors="replace")])
        else:
            loop.remove_reader(sys.stdin.fileno())

    send(["set_size", *_size()])
    loop.add_reader(sys.stdin.fileno(), on_input)
    if interactive:
        loop.add_signal_handler(signal.SIGWINCH, lambda: send(["set_size", *_size()]))
    try:
        while True:
            message = await socket.read_message()
            if message is None:
                return 0
            kind, *rest = json.loads(message)
            if kind == "stdout":
                os.write(sys.stdout.fileno(), rest[0].encode())
            elif kind == "disconnect":
                return 0
    finally:
        loop.remove_reader(sys.stdin.fileno())
        socket.close()


def run_shell(base: str, token: str, name: str) -> int:
    """Connect this terminal to the server's terminal `name` until it ends."""
    interactive = sys.stdin.isatty()
    saved = None
    if interactive:
        import termios
        import tty

        saved = termios.tcgetattr(sys.stdin.fileno())
        tty.setraw(sys.stdin.fileno())
    try:
        return asyncio.run(_session(base, token, name))
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
        _delete(base, token, name)


def _delete(base: str, token: str, name: str) -> None:
    import urllib.request

    request = urllib.request.Request(base + f"api/terminals/{quote(name, safe='')}", method="DELETE",
                                     headers={"Authorization": f"token {token}"})
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except OSError:
        pass  # already gone with its shell
