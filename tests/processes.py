"""Processes the tests start or look for: container kernels in /proc, line-driven Python children.

- `container_kernel_pids(marker)`: live processes of container kernels
  (bubblewrap's included, whose command line carries the kernel's) whose
  command line contains `marker`, e.g. a runtime root or a container folder.
- `wait_until(predicate, timeout)`: poll a condition instead of sleeping.
- `PythonChild`: a `python -c SCRIPT` subprocess that says what it did one
  line at a time; `expect("held")` waits for the next such line.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

KERNEL_MODULE = "cellhop.kernel.container_kernel"
# Every process a test session starts inherits this variable (set in conftest), which tells
# its container kernels apart from those of other sessions on the same host.
SESSION_ENV = "CELLHOP_TEST_SESSION"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # gone meanwhile, or not ours to read
        return b""


def container_kernel_pids(marker: str | os.PathLike | None = None, session: str | None = None) -> list[int]:
    """Pids of live container-kernel processes whose command line contains `marker`.

    With `session`, only those whose environment carries SESSION_ENV=session.
    Zombies have an empty command line and never match.
    """
    needle = os.fsencode(str(marker)) if marker is not None else None
    tag = f"{SESSION_ENV}={session}".encode() if session else None
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        cmdline = _read(f"/proc/{entry}/cmdline")
        if KERNEL_MODULE.encode() not in cmdline or (needle and needle not in cmdline):
            continue
        if tag and tag not in _read(f"/proc/{entry}/environ").split(b"\0"):
            continue
        found.append(int(entry))
    return found


def wait_until(predicate, timeout: float = 30.0, what: str = "the condition", interval: float = 0.02):
    """Poll `predicate()` until it returns something truthy (returned); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class PythonChild:
    """`python -c script args...` with stdout (and stderr) read line by line on a thread."""

    def __init__(self, script: str, *args, env: dict | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, env=env,
        )
        self.lines: list[str] = []  # every line read so far
        self._queue: queue.Queue = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, prefix: str, timeout: float = 60.0) -> str:
        """The next line starting with `prefix` (earlier other lines are skipped, but kept in `lines`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(self._story(f"no line starting with {prefix!r} within {timeout:.0f} s")) from None
            if line is None:
                self._queue.put(None)  # stay at end of output for later calls
                raise AssertionError(self._story(f"exited (code {self.proc.wait()}) before printing {prefix!r}"))
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def pending(self) -> list[str]:
        """Lines printed but not yet consumed by `expect`, without waiting."""
        out = []
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return out
            if line is None:
                self._queue.put(None)
                return out
            self.lines.append(line)
            out.append(line)

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send `sig` and reap the child; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._pump_thread.join(timeout=10)  # it ends at the end of output
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def _story(self, what: str) -> str:
        return f"child {self.proc.pid} {what}; its output:\n" + "\n".join(self.lines)
