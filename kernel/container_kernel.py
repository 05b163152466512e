"""The kernel inside a container: a real ipykernel that also takes shipped cells and calls.

Besides the usual messages it answers two lean shell requests:
- `cellhop_execute_request`: a `%%remote` cell with the notebook's values
  it reads (pickle-5 frames); runs it as a normal cell (output, display and
  comms flow as IOPub messages) and replies with the values it assigned.
- `cellhop_apply_request`: call a shipped function on a batch of arguments
  (for `cellhop.remote(...)`'s `.remote`, `.map` and `.spawn`).

Started by a runtime as `python -m cellhop.kernel.container_kernel -f CONNECTION_FILE`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback

from ipykernel.ipkernel import IPythonKernel

from ..container import OOM_EXIT_CODE
from .answer_later import AnswerLater
from .cell_names import comes_back_by_default, is_user_name, names_assigned, parse
from .cell_result import RESULT, ResultCapture
from .lean_channel import LeanChannel
from .lean_status import LeanStatus
from .output_tracking import OutputTracker
from .remote_debug import install_in_container
from .secret_masking import SecretMask
from .serialize import dumps, loads, pack, unpack
from .shared_memory_link import ContainerEnd, SharedMemoryRefused



def _oom_exit_if_enforced(exc: BaseException | None) -> None:
    """Under RLIMIT_AS, running out of memory is a MemoryError: end the container as the OOM killer would."""
    if isinstance(exc, MemoryError) and os.environ.get("CELLHOP_MEMORY_ENFORCEMENT") == "rlimit":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(OOM_EXIT_CODE)


def _quiet_debug(log) -> None:
    """The kernel's logger at its handlers' level: ipykernel logs each request at debug level, and a
    logger at DEBUG builds those records for handlers (at WARNING) that drop them (a tenth of a call)."""
    handlers = getattr(log, "handlers", None)
    if handlers and isinstance(getattr(log, "level", None), int):
        floor = min(h.level for h in handlers)
        if log.level < floor:
            log.setLevel(floor)


RESTART_IN_PLACE_ENV = "CELLHOP_RESTART_IN_PLACE"  # set by the kernel provisioner (provisioner.py)


class ContainerKernel(IPythonKernel):
    implementation = "cellhop-container"
    msg_types = [*IPythonKernel.msg_types, "cellhop_execute_request", "cellhop_apply_request"]
    shutdown_hooks: list = []  # called when a shutdown (not a restart in place) begins; see curve_tunnel.serve_kernel

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # plain execute_requests too (remote GPU kernels): memory exhaustion ends the container
        self.shell.events.register("post_run_cell", lambda result: _oom_exit_if_enforced(result.error_in_exec))
        self.secret_mask = SecretMask.from_environment()
        self.secret_mask.install(self.session)  # secret values never leave the container unmasked
        self.outputs = OutputTracker()  # each shipped request's reply says how many outputs it published
        self.outputs.install(self.session)
        _quiet_debug(self.log)
        install_in_container()  # breakpoint() stops in the debugger, prompting in the notebook
        app = self.parent  # large values through memory shared with the notebook, where the runtime allows it
        info = {"transport": getattr(app, "transport", None), "ip": getattr(app, "ip", None)}
        self.shared_memory = ContainerEnd.start(info)
        # calls past ipykernel's shell thread (lean_channel.py)
        self.lean_channel = LeanChannel.open(self, info, getattr(app, "context", None))
        self.lean_status = LeanStatus(lambda state, parent: super(ContainerKernel, self)._publish_status(
            state, "shell", parent))
        self.results = ResultCapture(self.shell.displayhook,
                                     lambda value: self.secret_mask.withhold(pack({RESULT: value})))

    def start(self):
        super().start()
        if self.lean_channel is not None:
            self.lean_channel.start(self.io_loop)

    @property
    def kernel_info(self):
        info = super().kernel_info
        if self.lean_channel is not None:
            info["cellhop_lean"] = True  # the notebook may send calls on the lean channel (lean_channel.py)
        return info

    def _publish_status(self, status, channel, parent=None):
        """A shipped request's busy and idle go out only when the control plane could tell (lean_status)."""
        msg = parent or self.get_parent(channel)
        if channel == "shell" and status in ("busy", "idle") and LeanStatus.applies(msg):
            (self.lean_status.begin if status == "busy" else self.lean_status.end)(msg)
            return
        super()._publish_status(status, channel, parent)

    def _send_interrupt_children(self):
        # Interrupt this process only (a process-group signal would also reach the sandbox's init), and in
        # its main thread, where the cell runs: a signal to the process may land on another of its threads,
        # and then a call blocked in the main thread (a read, a sleep) goes on until it returns by itself.
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    async def shutdown_request(self, stream, ident, parent):
        """A kernel of the cellhop provisioner answers a restart's shutdown request and stays up:
        the control plane replaces this process itself (ContainerManager.restart), so the GPUs
        are never released in between, as they would be if it exited on its own."""
        if parent["content"].get("restart") and os.environ.get(RESTART_IN_PLACE_ENV) == "1":
            content = await self.do_shutdown(True)
            self.session.send(stream, "shutdown_reply", content, parent, ident=ident)
            return
        for hook in list(self.shutdown_hooks):
            hook()
        await super().shutdown_request(stream, ident, parent)

    async def cellhop_execute_request(self, stream, ident, parent):
        content = parent["content"]
        shell = self.shell
        msg_id = parent["header"]["msg_id"]
        self.outputs.begin(msg_id)
        reply: dict = {"status": "ok", "values": [], "errors": {}}
        frames: list = []
        try:
            namespace, failed = unpack(content.get("push", []), self._shared_in(parent))
        except SharedMemoryRefused as exc:
            namespace, failed = {}, {"": f"shared memory: {exc}"}
        if failed:
            reply.update(status="error", ename="TransferError",
                         evalue="could not rebuild in the container: " + "; ".join(failed.values()),
                         traceback=[], outputs=self.outputs.end(msg_id))
            self.session.send(stream, "cellhop_execute_reply", reply, parent, ident=ident)
            return
        shell.user_ns.update(namespace)
        before = {k: id(v) for k, v in shell.user_ns.items()}
        code = content["code"]
        self._allow_stdin = bool(content.get("allow_stdin", False))
        self._forward_input(self._allow_stdin)  # input() asks the notebook, as in execute_request
        try:
            transformed = shell.transform_cell(code)
        except Exception:
            transformed = code
        if content.get("pull") != []:  # the last expression comes back as the notebook cell's result
            self.results.arm()
        if "await" in code and shell.should_run_async(code, transformed_cell=transformed,
                                                      preprocessing_exc_tuple=None):
            result = await shell.run_cell_async(code, store_history=True, transformed_cell=transformed,
                                                preprocessing_exc_tuple=None)
        else:
            result = shell.run_cell(code, store_history=True)
        self._restore_input()
        kept = self.results.take()
        error = result.error_before_exec or result.error_in_exec  # MemoryError: the post_run_cell hook exits
        reply["execution_count"] = shell.execution_count - 1
        if error is not None:
            reply.update(status="error", ename=type(error).__name__, evalue=str(error),
                         traceback=list(getattr(shell, "_last_traceback", None) or []))
        pull = content.get("pull")
        if pull is None:
            assigned = names_assigned(parse(transformed))
            ns = shell.user_ns
            changed = {k for k, v in ns.items() if before.get(k) != id(v) and is_user_name(k)}
            names = sorted(n for n in (assigned | changed) & ns.keys() if comes_back_by_default(ns[n]))
        else:
            names = list(pull)
            missing = [n for n in names if n not in shell.user_ns]
            for name in missing:
                reply["errors"][name] = f"{name}: not defined in the container"
            names = [n for n in names if n in shell.user_ns]
        packed = self.secret_mask.withhold(pack({n: shell.user_ns[n] for n in names}))
        if kept is not None:
            packed.meta += kept[0].meta
            packed.frames += kept[0].frames
            reply["result"] = kept[1]  # shown if the notebook cannot rebuild the value
        reply["values"], frames = packed.meta, packed.frames
        reply["errors"].update(packed.errors)
        frames = self._shared_out(frames, content, reply)
        reply["outputs"] = self.outputs.end(msg_id)  # flushes stdout and stderr first
        self.session.send(stream, "cellhop_execute_reply", reply, parent, ident=ident, buffers=frames)

    async def cellhop_apply_request(self, stream, ident, parent):
        """Call fn(*args, **kwargs) for each call of a batch; reply with each outcome."""
        outcomes = []
        msg_id = parent["header"]["msg_id"]
        self.outputs.begin(msg_id)
        try:
            fn, calls = loads(self._shared_in(parent))
        except Exception as exc:
            reply = {"status": "error", "ename": type(exc).__name__,
                     "evalue": f"could not rebuild the function or its arguments in the container: {exc}"}
            self.session.send(stream, "cellhop_apply_reply", reply, parent, ident=ident)
            return
        self._allow_stdin = bool(parent["content"].get("allow_stdin", False))
        self._forward_input(self._allow_stdin)  # input() and breakpoint() ask the notebook, when it allows
        for args, kwargs in calls:
            try:
                outcomes.append((True, fn(*args, **kwargs)))
            except KeyboardInterrupt as exc:
                outcomes.append((False, _portable_exception(exc)))
                break
            except BaseException as exc:  # returned to the caller, who raises or returns it
                _oom_exit_if_enforced(exc)
                outcomes.append((False, _portable_exception(exc)))
        self._restore_input()
        outputs = self.outputs.end(msg_id)  # flushes stdout and stderr first
        if len(outcomes) == 1 and outcomes[0][0] and isinstance(outcomes[0][1], AnswerLater):
            # answered when it settles; the next request is taken meanwhile (answer_later.py)
            outcomes[0][1].future.add_done_callback(lambda future: self.io_loop.add_callback(
                self._answer_later, stream, ident, parent, future, outputs))
            return
        self._apply_reply(stream, ident, parent, outcomes, outputs)

    def _answer_later(self, stream, ident, parent, future, outputs: int) -> None:
        """A later answer's reply, sent from the main thread's event loop as every reply is."""
        try:
            outcomes = [(True, future.result())]
        except BaseException as exc:  # noqa: BLE001 - returned to the caller, as a direct call's
            outcomes = [(False, _portable_exception(exc))]
        self._apply_reply(stream, ident, parent, outcomes, outputs)
        if self.lean_channel is not None and stream is self.lean_channel.socket:
            self.lean_channel.look_for_requests()

    def _apply_reply(self, stream, ident, parent, outcomes: list, outputs: int) -> None:
        try:
            frames = dumps(outcomes)
            reply = {"status": "ok", "count": len(outcomes)}
            if self.secret_mask and self.secret_mask.holds(frames):
                frames = []
                reply = {"status": "error", "ename": "SecretWithheld",
                         "evalue": "the result holds the value of a secret; it stays in the container "
                                   "(cellhop never sends secret values out of it)"}
        except Exception as exc:
            frames = []
            reply = {"status": "error", "ename": type(exc).__name__,
                     "evalue": f"the result cannot be sent back from the container: {exc}"}
        reply["outputs"] = outputs
        frames = self._shared_out(frames, parent["content"], reply)
        self.session.send(stream, "cellhop_apply_reply", reply, parent, ident=ident, buffers=frames)

    def _shared_in(self, parent) -> list:
        """A request's frames, those it sent through shared memory mapped in."""
        buffers = parent.get("buffers", [])
        shared = parent["content"].get("shm")
        if not shared:
            return buffers
        if self.shared_memory is None:
            raise SharedMemoryRefused("the request names shared memory, which this container does not offer")
        return self.shared_memory.restore(buffers, shared)

    def _shared_out(self, frames: list, content: dict, reply: dict) -> list:
        """A reply's frames, its large buffers through shared memory when the request's connection allows.
        Not with secrets: the wire's buffers are masked (secret_masking), shared memory is not."""
        if self.shared_memory is None or not content.get("shm") or self.secret_mask:
            return frames
        frames, shared = self.shared_memory.offload(frames, content["shm"])
        if shared:
            reply["shm"] = shared
        return frames


def _portable_exception(exc: BaseException) -> BaseException:
    """The exception itself when it pickles, with the remote traceback as a note; else a stand-in."""
    import cloudpickle

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    exc.__traceback__ = None
    try:
        cloudpickle.dumps(exc)
    except Exception:
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    exc.__cellhop_remote_traceback__ = text
    return exc


def main(argv: list[str] | None = None) -> None:
    from ipykernel.kernelapp import IPKernelApp

    argv = list(sys.argv[1:] if argv is None else argv)
    # parent_handle=1: no parent poller, and no connection banner in the container's log
    argv += ["--IPKernelApp.quiet=True", "--IPKernelApp.parent_handle=1"]
    if os.environ.get(RESTART_IN_PLACE_ENV) != "1":  # a whole kernel (provisioner) keeps history, as any kernel
        argv.append("--HistoryManager.enabled=False")
    IPKernelApp.launch_instance(argv=argv, kernel_class=ContainerKernel)


if __name__ == "__main__":
    main()
