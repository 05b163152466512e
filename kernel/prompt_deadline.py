"""A deadline on the notebook's wait for an answer to a container's prompt (input(), a pdb prompt)."""

from __future__ import annotations

import _thread
import threading
import time


class PromptDeadline:
    """`with PromptDeadline(deadline) as expiry:` around the notebook's wait for an answer to a container's
    prompt: at the deadline the wait is interrupted (the main thread's KeyboardInterrupt, as a user's
    interrupt would) and `expiry.passed` is set, that interrupt absorbed, so the caller can treat it as
    its timeout. No deadline, or not on the main thread (where the notebook's stdin is): it does nothing."""

    def __init__(self, deadline: float | None):
        self.deadline = deadline
        self.passed = False
        self._lock = threading.Lock()
        self._done = False
        self._timer: threading.Timer | None = None

    def __enter__(self) -> PromptDeadline:
        if self.deadline is not None and threading.current_thread() is threading.main_thread():
            self._timer = threading.Timer(max(0.0, self.deadline - time.monotonic()), self._fire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def _fire(self) -> None:
        with self._lock:
            if not self._done:
                self.passed = True
                _thread.interrupt_main()

    def __exit__(self, etype, value, tb) -> bool:
        with self._lock:
            self._done = True
        if self._timer is not None:
            self._timer.cancel()
        if not self.passed:
            return False
        if etype is None:  # answered as the deadline came: its interrupt is on its way; take it here
            try:
                for _ in range(1000):
                    time.sleep(0.001)
            except KeyboardInterrupt:
                pass
        return etype is None or issubclass(etype, KeyboardInterrupt)
