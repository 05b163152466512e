"""One notebook's remote execution: its GPU selection (`%gpu`) and running a cell (`%%remote`).

`%gpu` sets the notebook's default RunSpec here; `%%remote` calls `run_cell`.
Cells run in the notebook's container pool (container_pool.py), the one its
`cellhop.remote` functions use too: the cells share one warm container per
run spec, so remote state persists across cells like a kernel's, and a cell
with other `--gpu` gets its own.

The values a cell assigns come back under a pull policy: `c.Cellhop.pull` of
this kernel's config, made stricter per cell by `--pull safe` (safe_pickle.py).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass

from ..errors import CellhopError, ContainerGone, InvalidContainerSpec, UnsendableVariable
from ..spec_rules import SpecError
from ..gpu_request import GpuRequest, feasible_choices
from .async_landing import Arrival, Landing
from .cell_names import is_user_name, names_read, parse, running_cell_number
from .cell_result import NO_RESULT, split_result
from .container_pool import CELLS, ContainerPool, Lease
from .control_plane_client import ControlPlaneClient
from .gpu_prices import KernelPrices
from .queue_status import QueueStatus
from .remote_debug import remember
from .remote_run import RemoteRun
from .run_spec import WORKDIR_MODES, RunSpec
from .safe_pickle import check_policy, stricter
from .serialize import Packed, pack
from .status_line import StatusLine, describe_gpus, finished_text
from .workdir_sync import configured_limit, needs_copy
from .workdir_sync import push as push_folder

Defaults = RunSpec  # what `%gpu` sets: the notebook's default run spec (the name older code knows)


@dataclass
class CellJob:
    """One `%%remote` cell on its way to a container."""

    code: str
    spec: RunSpec
    packed: Packed  # the notebook values it reads
    pull: list[str] | None  # names to bring back; None: all it assigned
    parent: dict  # the notebook request its outputs belong to
    status: StatusLine
    input_fn: object = None  # answers input() in the cell; None: no stdin
    policy: str = "all"  # what may come back: 'safe' (data types only) or 'all'


class RemoteCells:
    def __init__(self, shell, control: ControlPlaneClient, sink, comm_proxies=None, owner: str = "notebook"):
        self.shell = shell
        self.control = control
        self.sink = sink
        self.comm_proxies = comm_proxies
        self.owner = owner
        self.pull = configured_pull(getattr(shell, "config", None))  # c.Cellhop.pull: the notebook's floor
        self.defaults = RunSpec(**default_workdir(getattr(shell, "config", None)))  # c.Cellhop.workdir, else rw
        self.no_folder: str | None = None  # why default cells run without the notebook's folder (said once)
        self.pool = ContainerPool(control, sink, comm_proxies, owner=owner, pull=self.pull)
        self._built: dict[str, dict] = {}  # an image's build spec (JSON) -> what its build said
        self.landing = Landing(shell, sink, getattr(shell, "kernel", None))  # --async values, as runs finish
        self.prices = KernelPrices(control)  # a cell's cost on its status line (asked once per kernel)

    @property
    def sessions(self) -> dict:
        """The notebook's warm containers (primary connections), cells' and functions' alike."""
        return self.pool.sessions()

    # -- %gpu ---------------------------------------------------------------------
    def resolve(self, base: RunSpec, request: str | None = None, **changes) -> RunSpec:
        """`base` with what the user typed applied; fails at once with what this host has."""
        if request is not None:
            gpu = GpuRequest.parse(request)
            feasible_choices(gpu, self.control.inventory())
            changes["gpu"] = gpu
        return base.with_(**changes)

    def select(self, request: str | None = None, **changes) -> RunSpec:
        """Set the notebook's defaults (`%gpu`)."""
        self.defaults = self.resolve(self.defaults, request, **changes)
        if "idle_timeout" in changes and not self.defaults.keep_warm:  # the cells' warm containers too
            for session in self.pool.sessions(CELLS).values():
                try:
                    self.control.touch(session.id, self.defaults.idle_timeout)
                except Exception:  # it ended meanwhile: the next cell starts another with the new setting
                    pass
        return self.defaults

    def keep_warm(self):
        """`%gpu --keep-warm N`: start the %%remote container now and keep it (or, with 0, let it go)."""
        d = self.prepare_image(self._folder_or_not(self.defaults, None), "")
        return self.pool.keep_warm(d, CELLS, "this notebook's %%remote cells", d.keep_warm)

    def prepare_image(self, d: RunSpec, code: str) -> RunSpec:
        """Build the cell's image (its progress shows if it builds) and check that the values the
        cell reads will unpickle there; `d` with the built image's key. While a container of that
        image is warm, the image is not asked for again (a warm cell makes no request)."""
        if d.image is None or d.image.is_default:
            return d.with_(image_key=None) if d.image_key is not None else d
        from .image_use import build_for_use, check_values
        from .output_relay import KernelSink

        info = self._built.get(json.dumps(d.image.build_spec(), sort_keys=True))
        if info is None or not self.pool.warm(d.with_(image_key=info["key"]), CELLS):
            info = build_for_use(self.control, d.image, in_kernel=isinstance(self.sink, KernelSink))
            self._built[json.dumps(d.image.build_spec(), sort_keys=True)] = info  # as the next cell asks
        check_values(self.values_to_send(code), info, d.image)
        return d.with_(image_key=info["key"])

    def shutdown(self) -> None:
        self.landing.close()
        self.pool.shutdown("notebook kernel shut down")

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

    def run_cell(self, code: str, d: RunSpec, out: list[str] | None = None, pull: bool = True,
                 fresh: bool = False, input_fn=None, show_status: bool = True, policy: str | None = None):
        """Run `code` in the container for `d`; land its values in the notebook; return the value of its
        last expression (None without one), which `%%remote` makes the notebook cell's result.

        `policy`: 'safe' brings back data types only (`--pull safe`); the notebook's c.Cellhop.pull
        still applies when it is stricter."""
        job = self._job(code, d, out, pull, input_fn, show_status, policy)
        try:
            with self._lease(job, fresh) as lease:
                values, result = self._execute(job, lease)
        except ContainerGone:  # it had been stopped (idle) before the cell reached it: a fresh one runs it
            with self._lease(job, fresh) as lease:
                values, result = self._execute(job, lease)
        self.shell.user_ns.update(values)
        return None if result is NO_RESULT else result

    def run_cell_async(self, code: str, d: RunSpec, out: list[str] | None = None, pull: bool = True,
                       fresh: bool = False, show_status: bool = True, policy: str | None = None) -> RemoteRun:
        """Start `code` and return a handle at once; its values land in the notebook when it finishes
        (from the kernel's main thread, between cells: async_landing.py), or on `wait()` if that is sooner.

        The values it reads are packed now, as they are when the cell runs; the
        work goes on over a second connection to the same container.
        """
        job = self._job(code, d, out, pull, None, show_status, policy)
        lease = self._lease(job, fresh, own_connection=True)
        job.status.show(f"▶ running in the background on container {lease.session.id} · "
                        f"{describe_gpus(lease.session.container)}; its values land in the notebook when it ends")
        arrival = Arrival(running_cell_number(self.shell), job.status, job.parent)

        def target():
            nonlocal lease
            try:
                with lease:
                    values = self._execute(job, lease, result_as_display=True)[0]
            except ContainerGone:  # stopped (idle) before the cell reached it: a fresh one runs it
                lease = self._lease(job, fresh, own_connection=True)
                with lease:
                    values = self._execute(job, lease, result_as_display=True)[0]
            self.landing.arrived(arrival, values)
            return values

        return RemoteRun("remote cell", target, interrupt=lambda: lease.session.interrupt(),
                         on_done=lambda values: self.landing.land(arrival))

    def _job(self, code: str, d: RunSpec, out, pull: bool, input_fn, show_status: bool,
             policy: str | None = None) -> CellJob:
        """Everything about the cell that is settled before a container is involved."""
        policy = stricter(check_policy(policy or "all"), self.pull)
        packed = self.pack_cell(code)
        parent = self.sink.current_parent()
        d = self.prepare_image(self._folder_or_not(d, parent), code)
        status = StatusLine(self.sink if show_status else None, parent)
        return CellJob(code, d, packed, out if pull else [], parent, status, input_fn, policy)

    # -- the notebook's folder as working folder, by default where it can be -------------------------
    def _folder_or_not(self, d: RunSpec, parent: dict | None) -> RunSpec:
        """`d`, or `d` without the notebook's folder when that is only the default (not `--workdir` nor
        c.Cellhop.workdir) and an earlier cell found it cannot be bound, or this kernel's folder is gone."""
        if not d.workdir_fallback or d.workdir == "none":
            return d
        if self.no_folder is None:
            try:
                os.getcwd()
            except OSError as error:
                self._without_folder(f"this kernel's working folder cannot be read ({error})", parent)
        return d if self.no_folder is None else d.with_(workdir="none", workdir_fallback=True)

    def _without_folder(self, why: str, parent: dict | None) -> None:
        """Default cells run without the notebook's folder from now on; say so once, quietly."""
        first, self.no_folder = self.no_folder is None, why
        if first and parent is not None:
            StatusLine(self.sink, parent).show(
                f"cellhop: %%remote cells run in a private empty folder, not the notebook's folder: {why}. "
                "Relative paths are the container's own; `--workdir rw` asks for the folder (and fails if it "
                "cannot be bound), `--workdir none` or c.Cellhop.workdir = 'none' ends this note.", "note")

    def _lease(self, job: CellJob, fresh: bool, own_connection: bool = False) -> Lease:
        """`_lease_once`; where the control plane refuses the notebook's folder that was only the default,
        the cell runs without it (said once) instead of failing."""
        try:
            return self._lease_once(job, fresh, own_connection)
        except (InvalidContainerSpec, SpecError) as error:
            if not (job.spec.workdir_fallback and job.spec.workdir != "none" and "'workdir'" in str(error)):
                raise
            self._without_folder(f"the control plane cannot bind it ({error})", job.parent)
            job.spec = job.spec.with_(workdir="none", workdir_fallback=True)
            return self._lease_once(job, fresh, own_connection)

    def _lease_once(self, job: CellJob, fresh: bool, own_connection: bool = False) -> Lease:
        on_event = QueueStatus(self.control, job.status, str(job.spec.gpu), self.owner).on_event
        others = {} if self.pool.warm(job.spec, CELLS) else {
            key[0]: session for key, session in self.pool.sessions(CELLS).items() if key[0] != job.spec.key()}
        lease = self.pool.lease(job.spec, CELLS, "%%remote", fresh=fresh, on_event=on_event,
                                own_connection=own_connection)
        live = {key: session for key, session in others.items() if session.alive()}
        if lease.started is not None and live and len(live) == len(others):  # one stopped said so (the pool)
            ids = ", ".join(session.id for session in live.values())
            changed = ", ".join(dict.fromkeys(_differences(key, job.spec.key()) for key in live))
            StatusLine(self.sink, job.parent).show(
                f"cellhop: this cell runs in a new container {lease.session.id}: its {changed} differ from "
                f"earlier %%remote cells' (container {ids}); what lives only there is not here (it stays there, "
                "for cells with those settings).", "note")
        return lease

    def _execute(self, job: CellJob, lease: Lease, result_as_display: bool = False):
        """Ship the cell, keep the status line current; (the values it brought back, the value of its last
        expression or NO_RESULT). `result_as_display`: show that value in the cell instead (a cell that
        already returned cannot have it as its result)."""
        session, status = lease.session, job.status
        status.container_id = session.id if session.container.get("gpus") else None
        status.show(f"▶ running on container {session.id} · {describe_gpus(session.container)}")
        t0 = time.monotonic()
        if job.spec.workdir != "none" and needs_copy(session.container):  # another node: the folder is copied
            try:
                push_folder(session, job.parent, job.spec.workdir_folder(), configured_limit(self.shell.config))
            except CellhopError as error:
                if not job.spec.workdir_fallback:
                    raise
                self._without_folder(f"it is not copied to the container's node ({error})", job.parent)
        try:
            result = session.execute(job.code, job.packed, job.pull, job.parent, timeout=job.spec.timeout,
                                     input_fn=job.input_fn, policy=job.policy)
        except BaseException as error:
            ran = time.monotonic() - t0
            status.show(finished_text(session.container, ran, lease.started, failed=True,
                                      cost=self.prices.cost(session.container, ran)), "failed")
            remember(error, self, job.spec, session)  # %debug finds the container holding its frames
            raise
        status.show(finished_text(session.container, result.seconds, lease.started,
                                  cost=self.prices.cost(session.container, result.seconds)), "done")
        values, errors, value, display = split_result(result.values, result.errors, result.reply)
        if result_as_display and value is not NO_RESULT:
            display, value = result.reply.get("result"), NO_RESULT
        if display is not None:  # the container's formatting of it (the notebook would not rebuild the value)
            self.sink.publish("display_data", dict(display), {}, [], job.parent)
        if errors:
            print("cellhop: these values stayed in the container: " + "; ".join(errors.values()),
                  file=sys.stderr)
        return values, value


def _differences(old_key: tuple, new_key: tuple) -> str:
    """The %%remote options in which two run spec keys (RunSpec.key()) differ, as the user typed them."""
    options = ("--gpu", "--cpus", "--memory", "--image", "--volume", "--secret", "--workdir", "--workdir")
    changed = list(dict.fromkeys(o for o, a, b in zip(options, old_key, new_key) if a != b))
    return ", ".join(changed) or "settings"


def configured_workdir(config) -> str | None:
    """c.Cellhop.workdir of a kernel's traitlets config: the notebook's folder as %%remote cells' working
    folder ('rw', 'ro'), or not ('none'); None where it is not configured."""
    section = (config.get("Cellhop") or {}) if config is not None else {}
    value = section.get("workdir") if hasattr(section, "get") else None
    if value is not None and value not in WORKDIR_MODES:
        raise ValueError(f"c.Cellhop.workdir must be one of {', '.join(WORKDIR_MODES)}, not {value!r}")
    return value


def default_workdir(config) -> dict:
    """The RunSpec fields of %%remote cells' working folder by default: c.Cellhop.workdir as configured
    (it fails clearly where it cannot be bound), else the notebook's folder read-write, which falls back
    to none (said once) where the control plane cannot bind it."""
    value = configured_workdir(config)
    return {"workdir": "rw", "workdir_fallback": True} if value is None else {"workdir": value}


def configured_pull(config) -> str:
    """c.Cellhop.pull of a kernel's traitlets config ('all' without one)."""
    if config is None:
        return "all"
    section = config.get("Cellhop") or {}
    return check_policy(section.get("pull", "all") if hasattr(section, "get") else "all")
