"""The control plane's Python API: start a container for a GPU request, list, interrupt, stop.

It joins the scheduler (who gets which GPU) and a runtime (where the kernel
runs) and owns what is the same for every runtime: phases (queued, starting,
ready, stopping, exited), readiness (the kernel answers kernel_info_request),
exit causes, idle timeouts and lifecycle events. Thread-safe; blocking calls.

Exited containers stay listed, with their logs, for c.Cellhop.exited_ttl s, at most the newest
c.Cellhop.keep_exited; then they are forgotten and their folders deleted (at any depth). A spec's
working directory is held to workdir_policy.py's rule; standbys: standby_pool.py.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..container import ContainerSpec, ExitStatus, Phase
from ..errors import ContainerNotFound, ContainerStartError, ContainerStopped, QueueCancelled
from ..inventory import Inventory
from ..spec_rules import check_seconds, parse_memory
from . import file_tree
from .config import Cellhop
from .container_record import Container
from .container_storage import ContainerStorage
from .gpu_inventory import load_inventory
from .gpu_yield import yield_idle_gpus
from .kernel_activity import KernelActivity
from .kernel_ready import wait_until_ready
from .log_view import read_log
from .owners import owner_gone
from .paths import private_dir, runtime_dir
from .runtimes.base import ContainerRuntime
from .runtimes.factory import make_runtime
from .standby_pool import standby_pool_for
from .workdir_policy import WorkdirPolicy, jupyter_folders

log = logging.getLogger("cellhop")

Listener = Callable[[dict], None]
MONITOR_INTERVAL = 0.25
EXPIRE_EVERY = 20  # monitor rounds between two looks for exited containers to forget (5 s)


class _AnyOf:
    """Set when any of its events is set (what Scheduler.acquire takes as `cancelled`)."""

    def __init__(self, *events: threading.Event | None):
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


class ContainerManager:
    """Containers of one control plane. Owns its runtime; `close()` stops everything."""

    def __init__(self, config: Cellhop | None = None, inventory: Inventory | None = None,
                 runtime: ContainerRuntime | None = None):
        self.config = config or Cellhop()
        self.root = private_dir(Path(self.config.runtime_root)) if self.config.runtime_root else runtime_dir()
        self.runtime = runtime or make_runtime(self.config, self.root)
        if inventory is None:  # the runtime's own (a Ray cluster's), else this host's
            inventory = self.runtime.load_inventory() or load_inventory(self.config.simulated_gpus)
        self.inventory = inventory
        if not self.inventory.gpus and self.inventory.reason:
            log.info("cellhop: %s; containers will be CPU-only", self.inventory.reason)
        self.scheduler = self.runtime.make_scheduler(self.inventory, self.root, self.config)
        if hasattr(self.scheduler, "make_room"):  # past max_gpus_per_user, this user's idle holders yield
            self.scheduler.make_room = lambda count: yield_idle_gpus(self, count)
        self.storage = ContainerStorage(self.config)  # volumes and secrets; touches no disk until used
        self._containers: dict[str, Container] = {}
        self._stop_requested: dict[str, threading.Event] = {}  # per queued container: stop() sets it
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._closed = threading.Event()
        self._workdir_policy: WorkdirPolicy | None = None
        self.activity = KernelActivity()  # busy/idle from each kernel's own status messages
        self._monitor = threading.Thread(target=self._watch, name="cellhop-monitor", daemon=True)
        self._monitor.start()
        self.standby = standby_pool_for(self)  # standby containers requests claim (None: none kept)

    def default_memory(self) -> int | None:
        return parse_memory(self.config.default_memory) if self.config.default_memory else None

    def _state_dir(self) -> Path | None:
        """c.Cellhop.state_dir, which every container must not see (the default one the runtimes hide anyway)."""
        return Path(self.config.state_dir) if self.config.state_dir else None

    @property
    def workdir_policy(self) -> WorkdirPolicy:
        """Where a spec's workdir may be (c.Cellhop.workdir_roots, else the folder this process started in;
        the server extension sets its root_dir there)."""
        if self._workdir_policy is None:
            from jupyter_core.paths import jupyter_data_dir

            roots = list(self.config.workdir_roots) or [os.getcwd()]
            hidden = [self.root, self._state_dir() or Path(jupyter_data_dir()) / "cellhop", *jupyter_folders(),
                      *self.runtime.hidden_folders()]
            self._workdir_policy = WorkdirPolicy(roots, hidden)
        return self._workdir_policy

    # -- events ---------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(event)` on every lifecycle event; returns an unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, container: Container, **extra) -> None:
        event = {"type": "container", "id": container.id, "phase": container.phase.value,
                 "time": time.time(), "container": container.to_dict(), **extra}
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not break the lifecycle
                log.exception("cellhop: event listener failed")

    def flag(self, container: Container, **extra) -> None:
        """Tell every listener something about `container` beyond its phase (an idle GPU holder)."""
        self._emit(container, **extra)

    def _set_phase(self, container: Container, phase: Phase, **extra) -> None:
        container.set_phase(phase)
        self._emit(container, **extra)

    # -- lifecycle ------------------------------------------------------------
    def start(self, spec: ContainerSpec, on_event: Listener | None = None,
              cancelled: threading.Event | None = None) -> Container:
        """Queue for GPUs, start the container kernel and wait until it is ready.

        `on_event` sees this container's events only (queue position, phases),
        for progress in the notebook. Raises InvalidContainerSpec or ImageNotFound
        (before queueing), GpuRequestError, QueueTimeout, ContainerStopped (it was
        stopped or deleted before it was ready) or ContainerStartError; on any failure
        nothing is left running or held.
        """
        if spec.cpus is None and self.config.default_cpus:
            spec.cpus = self.config.default_cpus
        if spec.memory is None and self.config.default_memory:
            spec.memory = self.default_memory()
        self.check_spec(spec)  # a bad image, interpreter or folder fails before any queueing
        container = Container(id=secrets.token_hex(6), spec=spec)
        stop_requested = threading.Event()
        unsubscribe = self.subscribe(
            lambda e: on_event(e) if e["id"] == container.id else None) if on_event else None
        try:
            with self._lock:
                self._containers[container.id] = container
                self._stop_requested[container.id] = stop_requested
            self._emit(container)
            timeout = spec.queue_timeout if spec.queue_timeout is not None else self.config.queue_timeout
            try:
                self.storage.attach(container)  # a missing volume or secret fails before any queueing
                allocation = self.scheduler.acquire(
                    spec.gpu,
                    holder={"owner": spec.owner, "container": container.id},
                    timeout=timeout or None,
                    on_position=lambda n: self._queued(container, n),
                    cancelled=_AnyOf(cancelled, stop_requested),
                )
            except BaseException as exc:
                with self._lock:
                    self._stop_requested.pop(container.id, None)
                if stop_requested.is_set():  # stop() records its end (it stays listed, as exited)
                    self._await_exit(container)
                    raise self._stopped_while(container, "queued for a GPU") from None
                self.storage.detach(container)
                self._forget(container)
                if isinstance(exc, QueueCancelled):  # its requester went away
                    raise QueueCancelled(f"the start of container {container.id} was called off while it "
                                         "was queued for a GPU (its requester went away)") from None
                raise
            with self._lock:
                self._stop_requested.pop(container.id, None)
                if container.phase != Phase.QUEUED:  # stopped just as the GPUs were granted
                    self.scheduler.release(allocation)
                    stopped = True
                else:
                    stopped = False
                    container.allocation = allocation
                    container.queue_position = None
                    self._set_phase(container, Phase.STARTING)
            if stopped:
                self._await_exit(container)
                raise self._stopped_while(container, "queued for a GPU")
            if self.standby is not None and self.standby.claim_for(container):
                return container
            container.directory = self.runtime.container_directory(container.id)
            return self._launch_until_ready(container, "start")
        finally:
            if unsubscribe:
                unsubscribe()

    @staticmethod
    def _stopped_while(container: Container, what: str) -> ContainerStopped:
        why = container.exit_status.reason if container.exit_status else "stopped on request"
        return ContainerStopped(f"container {container.id} was stopped while {what}, before it was ready: {why}. "
                                "Nothing of it is left running and it holds no GPU; start a new one if you "
                                "still need it.")

    def check_spec(self, spec: ContainerSpec) -> None:
        """What the runtime will need of `spec`, checked now: a working directory the notebooks'
        folders allow (workdir_policy.py; `spec.workdir` becomes the folder to bind, links resolved),
        then what the runtime needs (the image is built, the interpreter exists, the working directory
        can be made and written). InvalidContainerSpec or ImageNotFound (user errors, 4xx over the API)
        otherwise."""
        if spec.workdir is not None:
            spec.workdir = self.workdir_policy.check(spec.workdir)
        self.runtime.check_spec(spec)

    def _launch_until_ready(self, container: Container, what: str) -> Container:
        """Launch the kernel and wait for it; on any failure nothing is left running or held."""
        try:
            container.adopt(self.runtime.launch(container))
            with self._lock:
                stopped = container.phase != Phase.STARTING
            if stopped:  # stop() came while the process was being launched: it may not have seen it
                raise (self._stopped_while(container, "starting") if what == "start" else
                       ContainerStartError(f"container {container.id} was stopped while restarting"))
            wait_until_ready(container, self.runtime, self.activity, self.config.start_timeout)
        except BaseException as exc:
            if container.phase == Phase.EXITED:  # already recorded (a stop): kill what the launch made
                self.runtime.kill(container)
                self.runtime.cleanup(container)
            status = self.runtime.poll(container)
            self._finish(container, status or ExitStatus(stopped=True, reason=f"{what} failed"), kill=True)
            if isinstance(exc, (ContainerStartError, ContainerStopped, KeyboardInterrupt, SystemExit)):
                raise
            raise ContainerStartError(f"container {container.id} failed to {what}: {exc}") from exc
        container.last_activity = time.monotonic()
        self._set_phase(container, Phase.READY)
        return container

    def _queued(self, container: Container, position: int) -> None:
        container.queue_position = position
        self._emit(container, queue_position=position)

    def get(self, container_id: str) -> Container:
        with self._lock:
            container = self._containers.get(container_id)
        if container is None:
            raise ContainerNotFound(f"no container {container_id!r}; list them with `%gpu` or GET cellhop/api/containers")
        return container

    def list(self) -> list[Container]:
        with self._lock:
            return list(self._containers.values())

    def touch(self, container_id: str, idle_timeout=...) -> None:
        """Mark activity, which resets the idle timeout (a kernel's own work counts without it); with
        `idle_timeout`, also change it (0: never idle-stopped, keep-warm; None: the control plane's default)."""
        container = self.get(container_id)
        if idle_timeout is not ...:
            container.spec.idle_timeout = check_seconds(idle_timeout, "idle_timeout")
        container.last_activity = time.monotonic()

    def poll(self, container_id: str) -> ExitStatus | None:
        """None while the container runs, else how it ended (recording the end)."""
        container = self.get(container_id)
        if container.phase == Phase.EXITED:
            return container.exit_status
        status = self.runtime.poll(container)
        if status is not None and container.phase != Phase.STOPPING:  # a stop records its own reason
            self._finish(container, status)
        return status

    def interrupt(self, container_id: str) -> None:
        container = self.get(container_id)
        if container.phase in (Phase.READY, Phase.STARTING):
            self.runtime.interrupt(container)

    def restart(self, container_id: str, on_event: Listener | None = None) -> Container:
        """Replace a ready container's kernel process with a fresh one, keeping its GPUs, id and
        connection info (ports, key), as a kernel restart does. Raises ContainerStartError (the
        container is then stopped and its GPUs freed) or CellhopError when it is not ready."""
        from ..errors import CellhopError

        container = self.get(container_id)
        unsubscribe = self.subscribe(
            lambda e: on_event(e) if e["id"] == container.id else None) if on_event else None
        try:
            with self._lock:
                if container.phase != Phase.READY:
                    raise CellhopError(f"container {container_id} is {container.phase.value}; only a ready "
                                       "container can be restarted: start a new one")
                self._set_phase(container, Phase.STARTING, reason="restarting")  # the monitor leaves it be
            self.runtime.terminate(container)
            deadline = time.monotonic() + self.config.stop_grace
            while time.monotonic() < deadline and self.runtime.poll(container) is None:
                time.sleep(0.02)
            self.runtime.kill(container)
            self.runtime.cleanup(container)
            if container.phase != Phase.STARTING:  # stopped meanwhile
                raise ContainerStartError(f"container {container_id} was stopped while restarting")
            return self._launch_until_ready(container, "restart")
        finally:
            if unsubscribe:
                unsubscribe()

    def stop(self, container_id: str, reason: str = "stopped on request", grace: float | None = None) -> ExitStatus:
        """Stop politely, then kill after the grace period. Idempotent."""
        container = self.get(container_id)
        with self._lock:
            if container.phase == Phase.EXITED:
                return container.exit_status
            queued = container.phase == Phase.QUEUED
            if container.phase == Phase.STOPPING:
                already = True
            else:
                already = False
                self._set_phase(container, Phase.STOPPING, reason=reason)
            if queued and not already:  # its start() is still waiting for GPUs: call the wait off
                event = self._stop_requested.get(container.id)
                if event is not None:
                    event.set()
        if not already and queued:
            # Nothing runs yet and no GPU is held: no grace to wait. The waiting start() sees the
            # signal at once, and one granted its GPUs meanwhile gives them back (see start()).
            self.scheduler.wake()
            self._finish(container, ExitStatus(stopped=True, reason=f"{reason} (stopped while queued for a GPU)"))
        elif not already:
            grace = self.config.stop_grace if grace is None else grace
            if container.handle is not None:  # no process yet (still launching): nothing to wait for
                self.runtime.terminate(container)
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline and self.runtime.poll(container) is None:
                    time.sleep(0.02)
            self._finish(container, ExitStatus(stopped=True, reason=reason), kill=True)
        return self._await_exit(container)

    def _await_exit(self, container: Container) -> ExitStatus:
        while container.phase != Phase.EXITED:
            time.sleep(0.01)
        return container.exit_status

    def _finish(self, container: Container, status: ExitStatus, kill: bool = False) -> None:
        """Record the end, kill what is left, free the GPUs. Runs once per container."""
        with self._lock:
            if container.phase == Phase.EXITED:
                return
            if kill:
                self.runtime.kill(container)
            real = self.runtime.poll(container)
            if real is not None and real.oom and not status.oom:
                status = real  # the kernel died of memory before the stop
            container.exit_status = status
            if container.allocation is not None:
                self.scheduler.release(container.allocation)
            try:
                self.runtime.cleanup(container)
            except Exception:  # whatever the container left behind, its end is recorded and waiters go on
                log.exception("cellhop: cleaning up after container %s failed", container.id)
            self.storage.detach(container)
            self.activity.forget(container.id)
            self._set_phase(container, Phase.EXITED, exit=status.to_dict())

    def _forget(self, container: Container) -> None:
        with self._lock:
            self._containers.pop(container.id, None)

    def remove(self, container_id: str) -> None:
        """Forget an exited container and delete its files (log included)."""
        container = self.get(container_id)
        if container.phase != Phase.EXITED:
            self.stop(container_id)
        self._forget(container)
        self._delete_folder(container)

    @staticmethod
    def _delete_folder(container: Container) -> None:
        """Delete an exited container's folder, however deep the tree it left (never following a link)."""
        if container.directory is None:
            return
        try:
            file_tree.remove_path(container.directory)
        except OSError as exc:
            log.warning("cellhop: deleting the folder of container %s (%s) failed: %s; delete it by hand",
                        container.id, container.directory, exc)

    def logs(self, container_id: str, tail: int | None = None) -> str:
        """The end of a container's log, masked: its last `tail` lines, never more than 1 MiB
        (log_view.py reads only the end of the file)."""
        return read_log(self.runtime, self.get(container_id), tail=tail)

    def expire(self, now: float | None = None) -> list[str]:
        """Forget exited containers past c.Cellhop.exited_ttl, or beyond the newest c.Cellhop.keep_exited,
        deleting their folders; returns their ids. The monitor calls it every few seconds."""
        now = time.time() if now is None else now
        keep, ttl = max(self.config.keep_exited, 0), self.config.exited_ttl
        with self._lock:
            exited = sorted((c for c in self._containers.values() if c.phase == Phase.EXITED),
                            key=lambda c: c.phase_time(Phase.EXITED) or 0, reverse=True)
            old = [c for i, c in enumerate(exited)
                   if i >= keep or (ttl and now - (c.phase_time(Phase.EXITED) or now) > ttl)]
            for container in old:
                self._containers.pop(container.id, None)
        for container in old:
            self._delete_folder(container)
        return [c.id for c in old]

    # -- background work ------------------------------------------------------
    def _watch(self) -> None:
        """Record deaths promptly, stop idle containers (idle: its kernel has worked on nothing since),
        forget old exited ones."""
        rounds = 0
        while not self._closed.is_set():
            self.activity.pump(MONITOR_INTERVAL)  # what the kernels say they are doing, meanwhile
            rounds += 1
            if rounds % EXPIRE_EVERY == 0:
                try:
                    self.expire()
                    if hasattr(self.scheduler, "recover"):  # leases of this user's crashed processes end
                        self.scheduler.recover()
                except Exception:
                    log.exception("cellhop: forgetting exited containers failed")
            for container in self.list():
                if container.phase not in (Phase.READY,):
                    continue
                try:
                    status = self.runtime.poll(container)
                    if status is not None:
                        self._finish(container, status)
                        continue
                    if self.owner_gone(container):
                        threading.Thread(target=self.stop, args=(container.id,),
                                         kwargs={"reason": f"its notebook kernel (pid {container.spec.owner_pid}) "
                                                           "exited"}, daemon=True).start()
                        continue
                    idle = container.spec.idle_timeout
                    idle = self.config.idle_timeout if idle is None else idle
                    idle_for = self.activity.idle_for(container.id, container.last_activity)
                    if idle and idle_for is not None and idle_for > idle:
                        threading.Thread(target=self.stop, args=(container.id,),
                                         kwargs={"reason": f"idle for {idle:.0f} s (scaledown window)"},
                                         daemon=True).start()
                except Exception:
                    log.exception("cellhop: monitoring container %s failed", container.id)
        self.activity.close()

    @staticmethod
    def owner_gone(container: Container) -> bool:
        """True when the kernel that asked for `container` ran on this host and has exited (owners.py: the
        same test decides when a session secret's owner is gone)."""
        return owner_gone(container.spec.owner_pid, container.spec.owner_host)

    def close(self) -> None:
        """Stop every container (used when the owner shuts down)."""
        self._closed.set()
        if self.standby is not None:
            self.standby.close()
        live = [c for c in self.list() if c.phase != Phase.EXITED]
        threads = [threading.Thread(target=self.stop, args=(c.id, "control plane shut down"), kwargs={"grace": 1.0})
                   for c in live]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.runtime.close()
        if hasattr(self.scheduler, "close"):  # its usage log and grant file
            self.scheduler.close()
        self.storage.close()
