"""One notebook's remote execution: its GPU selection, its warm containers, running a cell in one.

`%gpu` sets the defaults here; `%%remote` calls `run_cell`. Containers are
kept per resource shape (GPU request, CPUs, memory), so remote state persists
across cells like a kernel's, and a cell with other `--gpu` gets its own.

The values a cell assigns come back under a pull policy: `c.Cellhop.pull` of
this kernel's config, made stricter per cell by `--pull safe` (safe_pickle.py).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, replace

from ..container import ContainerSpec
from ..errors import ContainerDied, RemoteTimeout, UnsendableVariable
from ..gpu_request import GpuRequest, feasible_choices
from ..sizes import parse_memory
from .cell_names import is_user_name, names_read, parse
from .container_session import ContainerSession
from .control_plane_client import ControlPlaneClient
from .remote_run import RemoteRun
from .safe_pickle import check_policy, stricter
from .secret import secret_names
from .volume import mounts_of
from .serialize import Packed, pack
from .status_line import StatusLine, describe_gpus, finished_text, progress_text


@dataclass(frozen=True)
class Defaults:
    """What `%gpu` set for this notebook."""

    gpu: GpuRequest = GpuRequest()
    cpus: int | None = None
    memory: int | None = None
    idle_timeout: float | None = None
    timeout: float | None = None
    image: object = None  # a cellhop.Image (`--image NAME`); None: the notebook's own environment
    image_key: str | None = None  # the built image's key, set when a cell is about to use it
    volumes: tuple = ()  # ((name, path, read_only), ...): `--volume NAME:/path[:ro]`
    secrets: tuple = ()  # secret names: `--secret NAME`

    def key(self) -> tuple:
        return (str(self.gpu), self.cpus, self.memory, self.image_key, self.volumes, self.secrets)


class RemoteCells:
    def __init__(self, shell, control: ControlPlaneClient, sink, comm_proxies=None, owner: str = "notebook"):
        self.shell = shell
        self.control = control
        self.sink = sink
        self.comm_proxies = comm_proxies
        self.owner = owner
        self.pull = configured_pull(getattr(shell, "config", None))  # c.Cellhop.pull: the notebook's floor
        self.defaults = Defaults()
        self.sessions: dict[tuple, ContainerSession] = {}
        self._lock = threading.Lock()

    # -- %gpu ---------------------------------------------------------------------
    def resolve(self, base: Defaults, request: str | None = None, **changes) -> Defaults:
        """`base` with what the user typed applied; fails at once with what this host has."""
        if request is not None:
            gpu = GpuRequest.parse(request)
            feasible_choices(gpu, self.control.inventory())
            changes["gpu"] = gpu
        if "memory" in changes:
            changes["memory"] = parse_memory(changes["memory"])
        if "volumes" in changes:  # the whole list: %gpu sets it, %%remote adds its own to the defaults
            changes["volumes"] = tuple((m["name"], m["path"], m["read_only"]) for m in mounts_of(changes["volumes"]))
        if "secrets" in changes:
            changes["secrets"] = tuple(dict.fromkeys(secret_names(changes["secrets"])))
        return replace(base, **changes)

    def select(self, request: str | None = None, **changes) -> Defaults:
        """Set the notebook's defaults (`%gpu`)."""
        self.defaults = self.resolve(self.defaults, request, **changes)
        return self.defaults

    # -- containers ---------------------------------------------------------------
    def spec_for(self, d: Defaults) -> ContainerSpec:
        return ContainerSpec(gpu=d.gpu, owner=self.owner, cpus=d.cpus, memory=d.memory,
                             idle_timeout=d.idle_timeout, label="%%remote", image=d.image_key,
                             volumes=[{"name": n, "path": p, "read_only": ro} for n, p, ro in d.volumes],
                             secrets=list(d.secrets))

    def prepare_image(self, d: Defaults, code: str) -> Defaults:
        """Build the cell's image (its progress shows if it builds) and check that the values the
        cell reads will unpickle there; `d` with the built image's key."""
        if d.image is None or d.image.is_default:
            return replace(d, image_key=None)
        from .image_use import build_for_use, check_values
        from .output_relay import KernelSink

        info = build_for_use(self.control, d.image, in_kernel=isinstance(self.sink, KernelSink))
        check_values(self.values_to_send(code), info, d.image)
        return replace(d, image_key=info["key"])

    def session_for(self, d: Defaults, fresh: bool = False, status: StatusLine | None = None):
        """(warm or new session, seconds it took to start or None when it was warm)."""
        key = d.key()
        with self._lock:
            session = self.sessions.get(key)
        if session is not None and (fresh or not session.alive()):
            self.discard(key, reason="--fresh" if fresh else "container ended")
            session = None
        if session is not None:
            return session, None
        self._make_room(d)
        start = time.monotonic()
        request = str(d.gpu)

        def on_event(event):
            if status is not None and event.get("phase") in ("queued", "starting"):
                status.show(progress_text(event, request))

        container = self.control.start(self.spec_for(d), on_event=on_event)
        session = ContainerSession(container, self.control, self.sink, self.comm_proxies)
        with self._lock:
            self.sessions[key] = session
        return session, time.monotonic() - start

    def _make_room(self, d: Defaults) -> None:
        """Never queue behind ourselves: when no GPU for `d` is free, stop this notebook's idle
        containers holding the types it needs (their remote state goes with them)."""
        if d.gpu.cpu_only:
            return
        inv = self.control.inventory()
        wanted = d.gpu.types(inv)
        holders = self.control.holders()
        free = {t: 0 for t in wanted}
        for g in inv.gpus:
            if g.type in wanted and not holders.get(g.uuid):
                free[g.type] += 1
        if any(c.type in free and free[c.type] >= c.count or c.type == "any" and sum(free.values()) >= c.count
               for c in d.gpu.choices):
            return
        with self._lock:
            mine = [(k, s) for k, s in self.sessions.items()
                    if any(g["type"] in wanted for g in s.container.get("gpus") or [])]
        for key, session in mine:
            print(f"cellhop: stopping this notebook's container {session.id} to free its GPU for {d.gpu}",
                  file=sys.stderr)
            self.discard(key, reason=f"its GPU was needed for {d.gpu} by the same notebook")

    def discard(self, key: tuple, reason: str) -> None:
        with self._lock:
            session = self.sessions.pop(key, None)
        if session is not None:
            session.close()
            if self.control.poll(session.id) is None:
                self.control.stop(session.id, reason=reason)

    def shutdown(self) -> None:
        for key in list(self.sessions):
            self.discard(key, reason="notebook kernel shut down")

    # -- %%remote -----------------------------------------------------------------
    def values_to_send(self, code: str) -> dict:
        """The notebook values the cell reads; raise before anything runs if one cannot travel."""
        try:
            transformed = self.shell.transform_cell(code)
        except Exception:
            transformed = code
        ns = self.shell.user_ns
        names = sorted(n for n in names_read(parse(transformed)) if n in ns and is_user_name(n))
        return {n: ns[n] for n in names}

    def pack_cell(self, code: str) -> Packed:
        """The cell's notebook values, packed now; raise before anything runs if one cannot travel."""
        packed = pack(self.values_to_send(code))
        if packed.errors:
            raise UnsendableVariable(
                "cannot send to the container (nothing ran): " + "; ".join(packed.errors.values())
                + ". Create such a value inside the %%remote cell instead.")
        return packed

    def run_cell(self, code: str, d: Defaults, out: list[str] | None = None, pull: bool = True,
                 fresh: bool = False, input_fn=None, show_status: bool = True, policy: str | None = None) -> dict:
        """Run `code` in the container for `d`; land its values in the notebook; return them.

        `policy`: 'safe' brings back data types only (`--pull safe`); the notebook's c.Cellhop.pull
        still applies when it is stricter."""
        policy = stricter(check_policy(policy or "all"), self.pull)
        packed = self.pack_cell(code)
        d = self.prepare_image(d, code)
        parent = self.sink.current_parent()
        status = StatusLine(self.sink if show_status else None, parent)
        session, started = self.session_for(d, fresh=fresh, status=status)
        values = self._execute(code, d, packed, session, started, status, parent, out, pull, input_fn, policy)
        self.shell.user_ns.update(values)
        return values

    def run_cell_async(self, code: str, d: Defaults, out: list[str] | None = None, pull: bool = True,
                       fresh: bool = False, show_status: bool = True, policy: str | None = None) -> RemoteRun:
        """Start `code` and return a handle at once; its values land in the notebook on `wait()`.

        The values it reads are packed now, as they are when the cell runs; the
        work goes on over a second connection to the same container.
        """
        policy = stricter(check_policy(policy or "all"), self.pull)
        packed = self.pack_cell(code)
        d = self.prepare_image(d, code)
        parent = self.sink.current_parent()
        status = StatusLine(self.sink if show_status else None, parent)
        session, started = self.session_for(d, fresh=fresh, status=status)
        worker = session.secondary()

        def target():
            try:
                return self._execute(code, d, packed, worker, started, status, parent, out, pull, None, policy)
            finally:
                worker.close()

        return RemoteRun("remote cell", target, interrupt=session.interrupt, on_done=self.shell.user_ns.update)

    def _execute(self, code, d, packed, session, started, status, parent, out, pull, input_fn, policy) -> dict:
        """Ship the cell on `session`, keep the status line current, return the values it brought back."""
        status.container_id = session.id if session.container.get("gpus") else None
        status.show(f"▶ running on container {session.id} · {describe_gpus(session.container)}")
        pull_names = [] if not pull else out
        t0 = time.monotonic()
        try:
            result = session.execute(code, packed, pull_names, parent, timeout=d.timeout, input_fn=input_fn,
                                     policy=policy)
        except (ContainerDied, RemoteTimeout):
            if session.closed:  # it was stopped or died; a timeout that interrupted in time keeps it
                self.discard(d.key(), reason="died")
            status.show(finished_text(session.container, time.monotonic() - t0, started, failed=True), "failed")
            raise
        except BaseException:
            status.show(finished_text(session.container, time.monotonic() - t0, started, failed=True), "failed")
            raise
        finally:
            if not session.closed:
                self.control.touch(session.id)
        status.show(finished_text(session.container, result.seconds, started), "done")
        if result.errors:
            print("cellhop: these values stayed in the container: " + "; ".join(result.errors.values()),
                  file=sys.stderr)
        return result.values


def configured_pull(config) -> str:
    """c.Cellhop.pull of a kernel's config ('all' without one)."""
    if config is None:
        return "all"
    from ..server_ext.config import Cellhop

    return Cellhop(config=config).pull
