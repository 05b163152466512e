"""JupyterLab terminals whose shell runs inside a container.

jupyter_server's terminal manager (terminado's NamedTermManager) starts each terminal's command in a
pseudo-terminal and serves it at `/terminals/websocket/<name>`, the protocol JupyterLab's terminal
speaks; a named terminal may carry a command of its own. A container's terminal is one of those,
named `cellhop_<container id>_<n>`, whose command is the entering program (namespace_enter.py) told,
through a file in the container's server-only folder that it reads and deletes, to run the shell
inside the container (container_exec.py): the browser opens it like any terminal, by name. Resizing
and Ctrl-C are the pseudo-terminal's own (the shell is its foreground process group); when the
container stops its pid namespace ends with the shell, the pseudo-terminal reaches end of file and
terminado closes the terminal.

`cellhop shell <id>` gets the same shell without a browser: cli_exec.py connects a local
terminal to the same websocket.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets

from ..errors import CellhopError
from .container_exec import check_argv, helper_argv, plan

DEFAULT_SHELL = ["/bin/bash"]  # not a login shell: /etc/profile would reset the container's PATH (its image's venv)
_counter = itertools.count(1)


def terminal_name(container_id: str) -> str:
    """jupyter_server serves terminals whose names are word characters only (/terminals/websocket/(\\w+))."""
    return f"cellhop_{re.sub(r'[^A-Za-z0-9]', '', container_id)}_{next(_counter)}"


def _write_config(directory, data: bytes) -> str:
    """A file only the server can read, made afresh (never through a link), for the entering program."""
    name = f"enter-{secrets.token_hex(8)}.json"
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return str(directory / name)


def open_terminal(terminal_manager, runtime, container, shell: list[str] | None = None) -> str:
    """Start a named terminal whose shell runs inside `container`; its name. Runs on the server's event loop
    (terminado reads the terminal's output from the loop current where it is made)."""
    argv = check_argv(shell) if shell is not None else list(DEFAULT_SHELL)
    if container.directory is None:
        raise CellhopError(f"container {container.id} has no folder on this host; terminals need the local runtime")
    entry = plan(runtime, container)
    path = _write_config(container.directory, entry.config(argv, terminal=True))
    name = terminal_name(container.id)
    try:
        terminal_manager.create(name=name, shell_command=[*helper_argv(), "--config-file", path])
    except BaseException:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        raise
    return name


KEEP_ALIVE_SECONDS = 30.0


def keep_alive(manager, container_id: str, alive) -> None:
    """While `alive()` (a terminal open, a command running), mark the container active every
    KEEP_ALIVE_SECONDS (a third of its idle timeout when that is shorter), so its idle timeout does not stop
    it under someone working in it. On the server's event loop."""
    from tornado.ioloop import PeriodicCallback

    idle = manager.get(container_id).spec.idle_timeout
    idle = manager.config.idle_timeout if idle is None else idle
    every = min(KEEP_ALIVE_SECONDS, max(0.5, idle / 3)) if idle else KEEP_ALIVE_SECONDS

    def tick() -> None:
        try:
            if alive():
                manager.touch(container_id)
                return
        except Exception:  # the container is gone: nothing to keep alive
            pass
        callback.stop()

    callback = PeriodicCallback(tick, every * 1000)
    callback.start()
