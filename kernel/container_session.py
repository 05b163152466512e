"""The notebook's connection to one container: ship a cell or a call, stream its output, get values back.

The calling thread sends requests on the shell channel and waits for the reply
while answering `input()` prompts (stdin channel), interrupts (control
channel), timeouts, and the container's death, which the container's watch
learns from the wire (container_watch.py): no request to the control plane
while the container lives. A relay thread streams the container's IOPub
into the notebook meanwhile.

What comes back (a cell's values, a call's results) is rebuilt under a pull
policy (safe_pickle): the session's own (`pull=`, made stricter by a
container view that says `"pull": "safe"`, as a control plane may for a
container it does not trust) and the request's, the stricter of the two.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import zmq

from ..errors import ContainerDied, ContainerGone, RemoteError, RemoteTimeout
from .container_watch import ContainerWatch
from .output_relay import OutputRelay
from .prompt_deadline import PromptDeadline
from .safe_pickle import check_policy, stricter
from .serialize import Packed, dumps, loads, unpack
from .shared_memory_link import NotebookLink
from .status_line import describe_gpus
from ..wire import KernelConnection

WAKE_INTERVAL = 1.0  # a waiting request wakes this often at least (signals, timeouts); death wakes it at once
INTERRUPT_GRACE = 2.0
OUTPUT_WAIT = 5.0  # longest wait, after a reply, for the request's outputs still on their way


@dataclass
class CellResult:
    """What came back from a remote cell."""

    status: str
    values: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)  # name -> why it could not come back
    reply: dict = field(default_factory=dict)
    seconds: float = 0.0


class ContainerSession:
    """One connection to a warm container, as seen from the notebook.

    The primary connection of a container owns its output relay and its watch; a secondary one
    (`secondary()`, for work on another thread) shares them and has sockets of its own.
    """

    def __init__(self, container: dict, control, sink, comm_proxies=None, pull: str = "all", *,
                 relay: OutputRelay | None = None, watch: ContainerWatch | None = None, lean: bool = False):
        self.container = container  # the control plane's view: id, gpus, connection_info ...
        self.pull = stricter(check_policy(pull), container.get("pull"))
        self.id = container["id"]
        self.control = control
        self.sink = sink
        self.comm_proxies = comm_proxies
        self._primary = relay is None
        self.watch = watch if watch is not None else ContainerWatch(container, control)
        self._owns_watch = watch is None
        self.conn = KernelConnection(container["connection_info"], channels=("shell", "control", "stdin"))
        self.lean = lean  # calls go on the container kernel's lean channel (lean_channel.py): its kernel_info says
        if lean:
            self.conn.open("lean")
        self.relay = relay if relay is not None else OutputRelay(container["connection_info"], sink,
                                                                 comm_proxies, self)
        self.shared = NotebookLink(container["connection_info"])  # large values through shared memory
        self.closed = False
        self._timed_out = False
        self._sent_at = 0.0  # when the last request went out (monotonic)
        self._pollers: dict[str, zmq.Poller] = {}  # per reply channel: it, stdin and the watch (made on first use)
        self._applied: dict[str, str] = {}  # msg_id -> what its results are, for errors
        if self._primary:
            self._handshake()

    def secondary(self) -> ContainerSession:
        """Another connection to the same container (for `--async`, `.spawn` and calls from other threads).

        It shares this session's output relay and watch; its own sockets belong to the thread that uses it.
        """
        return ContainerSession(self.container, self.control, self.sink, self.comm_proxies, self.pull,
                                relay=self.relay, watch=self.watch, lean=self.lean)

    @property
    def apply_channel(self) -> str:
        """The channel shipped calls and cells go on and their replies come back on."""
        return "lean" if self.lean else "shell"

    @property
    def reply_socket(self):
        """The socket a call's reply arrives on (for pollers of several sessions: `.map`)."""
        return self.conn.sockets[self.apply_channel]

    # -- setup ------------------------------------------------------------------
    def _handshake(self, timeout: float = 10.0) -> None:
        """Wait until IOPub is subscribed (a request's idle arrives), so no early output is lost."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg_id, idle = self._send("shell", "kernel_info_request", {}, None, {})
            reply = self._drain_reply(msg_id, 0.5)
            if reply is not None and reply.content.get("cellhop_lean") is True and not self.lean:
                self.conn.open("lean")
                self.lean = True
            if idle.wait(0.2):
                self.relay.done(msg_id)
                return
            self.relay.done(msg_id)
        raise ContainerDied(f"container {self.id} does not publish output (no IOPub within {timeout:.0f} s)")

    def _drain_reply(self, msg_id: str, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self.conn.recv("shell", timeout=max(0.0, deadline - time.monotonic()))
            if reply is None or reply.parent_id == msg_id:
                return reply
        return None

    def where(self) -> str:
        return f" {self.id} ({describe_gpus(self.container)})"

    # -- requests ---------------------------------------------------------------
    def execute(self, code: str, push: Packed, pull: list[str] | None, parent: dict,
                timeout: float | None = None, input_fn=None, policy: str = "all") -> CellResult:
        """Run a cell; outputs stream to `parent`; raises RemoteError when the cell raised. Its values
        come back under `policy` or the session's pull policy, the stricter."""
        content = {"code": code, "push": push.meta, "pull": pull, "allow_stdin": input_fn is not None}
        frames = self._offload(content, push.frames)
        start = time.monotonic()
        reply = self._call("cellhop_execute_request", content, frames, parent, timeout, input_fn,
                           quiet_error=True, channel=self.apply_channel)
        values, errors = unpack(reply.content.get("values", []), self._restore(reply), stricter(policy, self.pull))
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

    def apply(self, fn, calls: list, parent: dict, timeout: float | None = None, policy: str | None = None,
              input_fn=None) -> list:
        """Call fn on each (args, kwargs); returns [(ok, value_or_exception)], rebuilt under `policy` or
        the session's pull policy, the stricter. `input_fn` answers its input() and pdb prompts."""
        content = {"n": len(calls), "allow_stdin": input_fn is not None}
        frames = self._offload(content, dumps((fn, calls)))
        reply = self._call("cellhop_apply_request", content, frames, parent, timeout, input_fn,
                           channel=self.apply_channel)
        if reply.content["status"] != "ok":
            raise RemoteError.of(reply.content.get("ename", "RemoteError"), reply.content.get("evalue", ""), [],
                                 self.where())
        outcomes = loads(self._restore(reply), stricter(policy, self.pull), what=_results_of(fn))
        if self._timed_out:  # the interrupt that stopped it at its timeout: said as the timeout it is
            timed_out = RemoteTimeout(f"the call ran past its timeout of {timeout:g} s and was interrupted "
                                      f"(container {self.id} is still warm, with its state)")
            outcomes = [(ok, timed_out if not ok and isinstance(value, KeyboardInterrupt) else value)
                        for ok, value in outcomes]
        return outcomes

    def send_apply(self, fn, calls: list, parent: dict, policy: str | None = None) -> str:
        """Pipelined form of `apply` for `.map`: send now, collect with `collect_apply`."""
        content = {"n": len(calls)}
        frames = self._offload(content, dumps((fn, calls)))
        msg_id, _ = self._send(self.apply_channel, "cellhop_apply_request", content, frames, parent)
        self._applied[msg_id] = (_results_of(fn), stricter(policy, self.pull))
        return msg_id

    def collect_apply(self, timeout: float = 0.0):
        """(msg_id, outcomes) of one finished pipelined apply, or None."""
        reply = self.conn.recv(self.apply_channel, timeout=timeout)
        if reply is None:
            return None
        self.relay.done(reply.parent_id)
        what, policy = self._applied.pop(reply.parent_id, ("the results", self.pull))
        if reply.content.get("status") != "ok":
            raise RemoteError.of(reply.content.get("ename", "RemoteError"), reply.content.get("evalue", ""), [],
                                 self.where())
        return reply.parent_id, loads(self._restore(reply), policy, what=what)

    def _offload(self, content: dict, frames: list) -> list:
        """The request's frames, its large buffers through shared memory where there is some (its
        content then says so, and names the connection the reply's large buffers may come back on)."""
        frames, shared = self.shared.offload(frames)
        if shared:
            content["shm"] = shared
        return frames

    def _restore(self, reply) -> list:
        """The reply's frames, those that came through shared memory mapped in (SharedMemoryRefused
        when they are not what they should be: the values are refused, the notebook is fine)."""
        return self.shared.restore(reply.buffers, reply.content.get("shm"))

    def forward(self, msg_type: str, content: dict, buffers=None, parent: dict | None = None) -> None:
        """Forward a frontend message (comm_msg, comm_close) to the container."""
        msg_id, _ = self._send("shell", msg_type, content, buffers, parent or {})
        self.relay.done(msg_id)  # no idle to wait for; its outputs still go to `parent`

    def _send(self, channel, msg_type, content, buffers, parent, quiet_error=False):
        """Register the request with the relay, then send it: its `idle` can never arrive unseen."""
        msg = self.conn.message(msg_type, content)
        msg_id = msg["header"]["msg_id"]
        idle = self.relay.expect(msg_id, parent, quiet_error=quiet_error)
        self._sent_at = time.monotonic()
        self.conn.send_message(channel, msg, buffers=buffers or None)
        return msg_id, idle

    def _call(self, msg_type, content, frames, parent, timeout, input_fn, quiet_error=False, channel="shell"):
        msg_id, idle = self._send(channel, msg_type, content, frames, parent, quiet_error=quiet_error)
        try:
            reply = self._wait_reply(msg_id, timeout, input_fn, channel)
            # every output of the request is relayed before the cell returns: as many as the reply says it
            # published (none: no wait), or, from a container that does not say, all before its idle
            outputs = reply.content.get("outputs")
            if isinstance(outputs, int) and not isinstance(outputs, bool):
                self.relay.wait_outputs(msg_id, outputs, OUTPUT_WAIT)
            else:
                idle.wait(OUTPUT_WAIT)
            return reply
        finally:
            self.relay.done(msg_id)

    def _wait_reply(self, msg_id: str, timeout: float | None, input_fn, channel: str = "shell"):
        shell, stdin = self.conn.sockets[channel], self.conn.sockets["stdin"]
        poller = self._pollers.get(channel)
        if poller is None:
            poller = self._pollers[channel] = zmq.Poller()
            poller.register(shell, zmq.POLLIN)
            poller.register(stdin, zmq.POLLIN)
            poller.register(self.watch.fileno(), zmq.POLLIN)  # readable once the container is known dead
        deadline = None if timeout is None else time.monotonic() + timeout
        interrupted_at = None
        self._timed_out = False
        while True:
            try:
                wake = WAKE_INTERVAL
                if deadline is not None:
                    now = time.monotonic()
                    until = deadline if interrupted_at is None else interrupted_at + INTERRUPT_GRACE
                    wake = min(wake, max(0.0, until - now) + 0.01)
                ready = dict(poller.poll(int(wake * 1000)))
                if shell in ready:
                    reply = self.conn.recv(channel, timeout=0)
                    if reply is not None and reply.parent_id == msg_id:
                        return reply
                if stdin in ready:
                    self._answer_input(input_fn, deadline if interrupted_at is None else None)
                if self.watch.dead.is_set():
                    self._died()
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

    def _answer_input(self, input_fn, deadline: float | None = None) -> None:
        """Answer the container's prompt (input(), pdb) from the notebook. An interrupt while the notebook
        asks goes on to the container (the caller's loop) instead of an answer: the prompt ends there, as
        does a prompt still open at the deadline (prompt_deadline.py)."""
        request = self.conn.recv("stdin", timeout=0)
        if request is None or request.type != "input_request":
            return
        try:
            with PromptDeadline(deadline) as expiry:
                value = input_fn(request.content.get("prompt", ""), request.content.get("password", False)) \
                    if input_fn else ""
        except EOFError:
            value = ""
        if expiry.passed:  # no answer: the caller's loop sees the deadline and interrupts the container
            return
        self.conn.send("stdin", "input_reply", {"value": value}, parent=request.msg["header"])

    def _died(self) -> None:
        """The watch saw the container end: say how, with the last lines of its log (ContainerGone when
        it had already ended when the request was sent, so the request never reached it)."""
        self.close()
        status = self.watch.status
        if self.watch.lost_before(self._sent_at):
            raise ContainerGone(f"container {self.id} had ended before this work was sent to it: "
                                f"{status.describe() if status else 'it ended'}")
        try:
            log = self.control.logs(self.id, tail=10)
        except Exception:  # the log is a courtesy; the death is the news
            log = ""
        raise ContainerDied(
            f"container {self.id} died: {status.describe() if status else 'it ended'}. The notebook kernel is "
            "fine; the next %%remote cell starts a fresh container"
            + (f"\n--- container log (last lines) ---\n{log}" if log.strip() else ""))

    def interrupt(self) -> None:
        """Interrupt the running request (SIGINT inside the container, via the control channel)."""
        self.conn.send("control", "interrupt_request", {})

    def alive(self) -> bool:
        """Not closed, and the container has not been seen to end (asks nobody)."""
        return not self.closed and not self.watch.dead.is_set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.close()
            self.shared.close()
            if self._primary:
                self.relay.close()
                if self.comm_proxies is not None:
                    self.comm_proxies.drop(self)
            if self._owns_watch:
                self.watch.close()


def _results_of(fn) -> str:
    return f"the result of {getattr(fn, '__name__', 'the function')}()"
