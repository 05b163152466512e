"""The thread that forks every local container (see Spawner)."""

from __future__ import annotations

import queue
import subprocess
import threading


class Spawner:
    """One long-lived thread that forks every container.

    bubblewrap's --die-with-parent (PR_SET_PDEATHSIG) fires when the *thread*
    that forked it exits, so forking from a short-lived worker thread would
    kill containers early. A thread that lives as long as the process does not.
    """

    def __init__(self):
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="cellhop-spawner", daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            argv, kwargs, result, done = self._jobs.get()
            try:
                result.append(subprocess.Popen(argv, **kwargs))
            except BaseException as exc:  # handed back to the caller
                result.append(exc)
            done.set()

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        result: list = []
        done = threading.Event()
        self._jobs.put((argv, kwargs, result, done))
        done.wait()
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]
