"""The notebook's connection to one container: ship a cell or a call, stream its output, get values back.

The main thread sends requests on the shell channel and waits for the reply
while answering `input()` prompts (stdin channel), interrupts (control
channel), timeouts, and the container's death (asked of the control plane);
a relay thread streams the container's IOPub into the notebook meanwhile.

What comes back (a cell's values, a call's results) is rebuilt under a pull
policy (safe_pickle): the session's own (`pull=`, made stricter by a
container view that says `"pull": "safe"`, as a control plane may for a
container it does not trust) and the request's, the stricter of the two.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import zmq

from ..errors import ContainerDied, RemoteError, RemoteTimeout
from .output_relay import OutputRelay
from .safe_pickle import check_policy, stricter
from .serialize import Packed, dumps, loads, unpack
from .status_line import describe_gpus
from ..wire import KernelConnection

DEATH_CHECK_INTERVAL = 0.1
INTERRUPT_GRACE = 2.0


@dataclass
class CellResult:
    """What came back from a remote cell."""

    status: str
    values: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)  # name -> why it could not come back
    reply: dict = field(default_factory=dict)
    seconds: float = 0.0


class ContainerSession:
    """One warm container as seen from the notebook."""

    def __init__(self, container: dict, control, sink, comm_proxies=None, pull: str = "all"):
        self.container = container  # the control plane's view: id, gpus, connection_info ...
        self.pull = stricter(check_policy(pull), container.get("pull"))
        self.id = container["id"]
        self.control = control
        self.sink = sink
        self.comm_proxies = comm_proxies
        self.conn = KernelConnection(container["connection_info"], channels=("shell", "control", "stdin"))
        self.relay = OutputRelay(container["connection_info"], sink, comm_proxies, self)
        self.closed = False
        self._timed_out = False
        self._primary = True
        self._applied: dict[str, str] = {}  # msg_id -> what its results are, for errors
        self._handshake()

    def secondary(self) -> ContainerSession:
        """Another connection to the same container (for `--async` and `.spawn` from other threads).

        It shares this session's output relay; its own shell socket belongs to the thread that uses it.
        """
        other = object.__new__(ContainerSession)
        other.__dict__.update(self.__dict__)
        other.conn = KernelConnection(self.container["connection_info"], channels=("shell", "control", "stdin"))
        other.closed = False
        other._primary = False
        other._applied = {}
        return other

    # -- setup ------------------------------------------------------------------
    def _handshake(self, timeout: float = 10.0) -> None:
        """Wait until IOPub is subscribed (a request's idle arrives), so no early output is lost."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg_id, idle = self._send("shell", "kernel_info_request", {}, None, {})
            self._drain_reply(msg_id, 0.5)
            if idle.wait(0.2):
                self.relay.done(msg_id)
                return
            self.relay.done(msg_id)
        raise ContainerDied(f"container {self.id} does not publish output (no IOPub within {timeout:.0f} s)")

    def _drain_reply(self, msg_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self.conn.recv("shell", timeout=max(0.0, deadline - time.monotonic()))
            if reply is None or reply.parent_id == msg_id:
                return

    def where(self) -> str:
        return f" {self.id} ({describe_gpus(self.container)})"

    # -- requests ---------------------------------------------------------------
    def execute(self, code: str, push: Packed, pull: list[str] | None, parent: dict,
                timeout: float | None = None, input_fn=None, policy: str = "all") -> CellResult:
        """Run a cell; outputs stream to `parent`; raises RemoteError when the cell raised. Its values
        come back under `policy` or the session's pull policy, the stricter."""
        content = {"code": code, "push": push.meta, "pull": pull, "allow_stdin": input_fn is not None}
        start = time.monotonic()
        reply = self._call("cellhop_execute_request", content, push.frames, parent, timeout, input_fn,
                           quiet_error=True)
        values, errors = unpack(reply.content.get("values", []), reply.buffers, stricter(policy, self.pull))
        errors = {**reply.content.get("errors", {}), **errors}
        result = CellResult(reply.content["status"], values, errors, reply.content, time.monotonic() - start)
        if result.status == "error" and self._timed_out:
            raise RemoteTimeout(f"the remote cell ran past --timeout {timeout:g} s and was interrupted "
                                f"(container {self.id} is still warm, with its state)")
        if result.status == "error":
            c = reply.content
            raise RemoteError.of(c.get("ename", "RemoteError"), c.get("evalue", ""), c.get("traceback", []),
                                 self.where())
        return result

    def apply(self, fn, calls: list, parent: dict, timeout: float | None = None) -> list:
        """Call fn on each (args, kwargs); returns [(ok, value_or_exception)]."""
        reply = self._call("cellhop_apply_request", {"n": len(calls)}, dumps((fn, calls)), parent, timeout, None)
        if reply.content["status"] != "ok":
            raise RemoteError.of(reply.content.get("ename", "RemoteError"), reply.content.get("evalue", ""), [],
                                 self.where())
        return loads(reply.buffers, self.pull, what=_results_of(fn))

    def send_apply(self, fn, calls: list, parent: dict) -> str:
        """Pipelined form of `apply` for `.map`: send now, collect with `collect_apply`."""
        msg_id, _ = self._send("shell", "cellhop_apply_request", {"n": len(calls)}, dumps((fn, calls)), parent)
        self._applied[msg_id] = _results_of(fn)
        return msg_id

    def collect_apply(self, timeout: float = 0.0):
        """(msg_id, outcomes) of one finished pipelined apply, or None."""
        reply = self.conn.recv("shell", timeout=timeout)
        if reply is None:
            return None
        self.relay.done(reply.parent_id)
        what = self._applied.pop(reply.parent_id, "the results")
        if reply.content.get("status") != "ok":
            raise RemoteError.of(reply.content.get("ename", "RemoteError"), reply.content.get("evalue", ""), [],
                                 self.where())
        return reply.parent_id, loads(reply.buffers, self.pull, what=what)

    def forward(self, msg_type: str, content: dict, buffers=None, parent: dict | None = None) -> None:
        """Forward a frontend message (comm_msg, comm_close) to the container."""
        msg_id, _ = self._send("shell", msg_type, content, buffers, parent or {})
        self.relay.done(msg_id)  # no idle to wait for; its outputs still go to `parent`

    def _send(self, channel, msg_type, content, buffers, parent, quiet_error=False):
        """Register the request with the relay, then send it: its `idle` can never arrive unseen."""
        msg = self.conn.message(msg_type, content)
        msg_id = msg["header"]["msg_id"]
        idle = self.relay.expect(msg_id, parent, quiet_error=quiet_error)
        self.conn.send_message(channel, msg, buffers=buffers or None)
        return msg_id, idle

    def _call(self, msg_type, content, frames, parent, timeout, input_fn, quiet_error=False):
        msg_id, idle = self._send("shell", msg_type, content, frames, parent, quiet_error=quiet_error)
        try:
            reply = self._wait_reply(msg_id, timeout, input_fn)
            idle.wait(5.0)  # every output of the request is relayed before the cell returns
            return reply
        finally:
            self.relay.done(msg_id)

    def _wait_reply(self, msg_id: str, timeout: float | None, input_fn):
        shell, stdin = self.conn.sockets["shell"], self.conn.sockets["stdin"]
        poller = zmq.Poller()
        poller.register(shell, zmq.POLLIN)
        poller.register(stdin, zmq.POLLIN)
        deadline = None if timeout is None else time.monotonic() + timeout
        interrupted_at = None
        self._timed_out = False
        while True:
            try:
                ready = dict(poller.poll(int(DEATH_CHECK_INTERVAL * 1000)))
                if shell in ready:
                    reply = self.conn.recv("shell", timeout=0)
                    if reply is not None and reply.parent_id == msg_id:
                        return reply
                if stdin in ready:
                    self._answer_input(input_fn)
                if not ready:
                    self._check_alive()
                    now = time.monotonic()
                    if deadline is not None and now > deadline:
                        if interrupted_at is None:
                            self.interrupt()
                            interrupted_at = now
                            self._timed_out = True
                        elif now - interrupted_at > INTERRUPT_GRACE:
                            self.control.stop(self.id, reason=f"cell ran past --timeout {timeout:g} s")
                            self.close()
                            raise RemoteTimeout(
                                f"the remote cell ran past --timeout {timeout:g} s and did not stop on interrupt; "
                                f"container {self.id} was stopped (the next cell gets a fresh one)")
            except KeyboardInterrupt:
                if interrupted_at is not None and (deadline is None or time.monotonic() <= deadline):
                    self.control.stop(self.id, reason="interrupted twice")
                    self.close()
                    raise ContainerDied(
                        f"interrupted twice: container {self.id} was stopped; "
                        "the next %%remote cell starts a fresh container") from None
                self.interrupt()
                interrupted_at = time.monotonic()
                deadline = None  # a user interrupt supersedes the timeout
                self._timed_out = False

    def _answer_input(self, input_fn) -> None:
        request = self.conn.recv("stdin", timeout=0)
        if request is None or request.type != "input_request":
            return
        try:
            value = input_fn(request.content.get("prompt", ""), request.content.get("password", False)) \
                if input_fn else ""
        except (EOFError, KeyboardInterrupt):
            value = ""
        self.conn.send("stdin", "input_reply", {"value": value}, parent=request.msg["header"])

    def _check_alive(self) -> None:
        status = self.control.poll(self.id)
        if status is None:
            self.control.touch(self.id)  # a running cell is activity: the idle timeout must not stop it
        if status is not None:
            self.close()
            log = self.control.logs(self.id, tail=10) if hasattr(self.control, "logs") else ""
            raise ContainerDied(
                f"container {self.id} died: {status.describe()}. The notebook kernel is fine; "
                "the next %%remote cell starts a fresh container"
                + (f"\n--- container log (last lines) ---\n{log}" if log.strip() else ""))

    def interrupt(self) -> None:
        """Interrupt the running request (SIGINT inside the container, via the control channel)."""
        self.conn.send("control", "interrupt_request", {})

    def alive(self) -> bool:
        return not self.closed and self.control.poll(self.id) is None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.close()
            if self._primary:
                self.relay.close()
                if self.comm_proxies is not None:
                    self.comm_proxies.drop(self)


def _results_of(fn) -> str:
    return f"the result of {getattr(fn, '__name__', 'the function')}()"
