"""A handle on work running in a container in the background (`%%remote --async`, `.spawn`)."""

from __future__ import annotations

import threading


class RemoteRun:
    """Status, wait and cancel for one background cell or call."""

    def __init__(self, label: str, target, interrupt, on_done=None):
        self.label = label
        self.status = "running"
        self.result = None
        self.error: BaseException | None = None
        self._interrupt = interrupt
        self._on_done = on_done
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(target,), name=f"cellhop-{label}", daemon=True)
        self._thread.start()

    def _run(self, target) -> None:
        try:
            self.result = target()
            self.status = "done"
        except BaseException as exc:  # kept for wait() to raise in the caller's thread
            self.error = exc
            self.status = "cancelled" if self.status == "cancelling" else "failed"
        finally:
            self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None):
        """The result (for a cell: the values it assigned, in the notebook since it finished); raises its error."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.label} is still running after {timeout} s")
        if self.error is not None:
            raise self.error
        if self._on_done is not None:
            self._on_done(self.result)
            self._on_done = None
        return self.result

    def cancel(self) -> None:
        """Interrupt it in the container (KeyboardInterrupt there)."""
        if not self.done():
            self.status = "cancelling"
            self._interrupt()

    def __repr__(self) -> str:
        return f"<RemoteRun {self.label}: {self.status}>"
