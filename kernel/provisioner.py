"""Whole kernels on GPU containers: the `cellhop` kernel provisioner.

A kernelspec whose `metadata.kernel_provisioner` is

    {"provisioner_name": "cellhop",
     "config": {"gpu": "H100", "image": null, "cpus": null, "memory": null}}

runs its kernel in a cellhop container: queued for its GPUs, sandboxed, its
working directory the notebook's folder (bound read-write). The kernel is
the container kernel (container_kernel.py), a real IPython kernel; the
container hands back its own connection info (ports or ipc sockets, HMAC
key), which jupyter_client's KernelManager adopts.

The provisioner's control plane is handed to it: a cellhop-enabled
jupyter_server gives its own to each kernel manager it makes
(`cellhop_control`, server_ext/app.py). Elsewhere (jupyter console,
nbclient) the provisioner makes one of its own with `connect()`: a
`cellhop serve` server over HTTP when CELLHOP_CONTROL_URL is set, else an
embedded control plane, which it closes when its kernel is shut down.

Lifecycle: launch (queue position and phases in the log and on the control
plane's event stream; `launch_timeout` names the phase it ran out in),
interrupt (SIGINT to the kernel inside), restart (a fresh kernel process in
the same container: the GPUs stay held, the ports and key stay the same),
shutdown (the container stops, its GPUs are released at once), culling
(jupyter_server's idle culling shuts it down like any kernel) and
get/load_provisioner_info (a restarted server reconnects to a container
still running, or finds it gone and cleans up).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from typing import Any

from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from tornado.web import HTTPError
from traitlets import Float, Int, List, Unicode, Union

from ..errors import (CellhopError, ContainerNotFound, ContainerStartError, GpuRequestError, ImageNotFound,
                      QueueTimeout)
from ..own_thread import on_own_thread

PROVISIONER_NAME = "cellhop"
KILL_GRACE = 2.0  # seconds between kill() and the container's stop, unless cleanup() comes first
ROOM_AGAIN = 1.0  # seconds between two tries to make room among its notebook's containers while queued
# Environment a container kernel keeps from the launch (besides the kernelspec's own `env`).
_PASSED_ENV = ("JPY_SESSION_NAME",)


class KernelLaunchError(CellhopError, HTTPError):
    """A cellhop kernel did not start. Raised from launch_kernel, its message reaches JupyterLab's
    "Error Starting Kernel" dialog (an HTTPError's message is what jupyter_server's API answers)."""

    def __init__(self, status: int, message: str):
        CellhopError.__init__(self, message)
        HTTPError.__init__(self, status, log_message=message.replace("%", "%%"))
        self.message = message

    def __str__(self) -> str:
        return self.message


def _exit_code(status) -> int:
    """A Popen-like exit code for an ExitStatus: the code, 128+signal, or 1."""
    if status.code is not None:
        return status.code
    if status.signal is not None:
        return 128 + status.signal
    return 0 if status.stopped else 1


class CellhopProvisioner(KernelProvisionerBase):
    """Runs a kernel in a cellhop container holding the GPUs its kernelspec asks for."""

    gpu = Unicode("any", config=True, help="GPU request: 'H100', 'H100:2', 'H100,A100-80GB', 'any', 'none'.")
    image = Unicode(None, allow_none=True, config=True,
                    help="A built cellhop image (key or name); None: the server's own Python environment.")
    cpus = Int(None, allow_none=True, config=True, help="CPUs the kernel may use; None: the control plane's default.")
    memory = Union([Unicode(), Int()], default_value=None, allow_none=True, config=True,
                   help="Memory limit, e.g. '16G'; None: the control plane's default.")
    volumes = List(Unicode(), config=True,
                   help="Volumes to mount, e.g. ['datasets:/data', 'weights:/models:ro'] (made on first use).")
    secrets = List(Unicode(), config=True,
                   help="Secrets whose variables the kernel gets in its environment (values masked in output).")
    launch_timeout = Float(
        300.0, config=True,
        help="Seconds from 'start kernel' to 'kernel ready': waiting in the queue for a GPU included. "
             "Past it the launch fails, naming the phase it was in, and nothing is left running.")

    container_id: str | None = None
    _cwd: str | None = None
    _restarting = False
    _kill_pending = False
    _exited: int | None = None

    # -- helpers ----------------------------------------------------------------
    _control_client = None  # the control plane this kernel's container is started through
    _owns_control = False  # made by this provisioner (no server handed one): closed with the kernel
    _launch_cwd: str | None = None  # the folder the kernel is launched in (jupyter_client's cwd)

    @property
    def control(self):
        """The control plane of this kernel's container: the one its kernel manager was handed by the
        server, else one of its own (made on first use, kept until the kernel is shut down)."""
        if self._control_client is None:
            handed = getattr(self.parent, "cellhop_control", None)
            if handed is not None:
                self._control_client = handed
            else:
                from traitlets.config import Config

                from .control_client import connect

                # no server: the one who launches this kernel (not a cell) chose its folder, so its own
                # control plane lets containers work there (and in this process's folder)
                config = Config()
                config.Cellhop.workdir_roots = [os.getcwd(), *([self._launch_cwd] if self._launch_cwd else [])]
                self._control_client, self._owns_control = connect(config), True
        return self._control_client

    _client = control

    @property
    def _local(self) -> bool:
        from .embedded_control_plane import EmbeddedControlPlane

        return isinstance(self._client, EmbeddedControlPlane)

    async def _call(self, fn, *args, **kwargs):
        """A quick control-plane call: inline when embedded, else on a thread (it is an HTTP request)."""
        if self._local:
            return fn(*args, **kwargs)
        return await on_own_thread(fn, *args, **kwargs)

    @property
    def _name(self) -> str:
        display = getattr(self.kernel_spec, "display_name", None) or f"cellhop {self.gpu}"
        return f"{display} [{(self.kernel_id or '?')[:8]}]"

    # -- KernelProvisionerBase -----------------------------------------------------
    @property
    def has_process(self) -> bool:
        return self.container_id is not None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        self._launch_cwd = kwargs.get("cwd")
        km = self.parent
        extra = kwargs.pop("extra_arguments", [])
        kwargs.pop("transport_encryption", None)
        if km is not None and hasattr(km, "format_kernel_cmd"):
            cmd = km.format_kernel_cmd(extra_arguments=extra)
        else:
            cmd = list(self.kernel_spec.argv) + list(extra)
        return await super().pre_launch(cmd=cmd, **kwargs)

    def _spec(self, cmd: list[str], kwargs: dict):
        from ..container import ContainerSpec
        from .container_kernel import RESTART_IN_PLACE_ENV

        launch_env = kwargs.get("env") or {}
        env = {k: launch_env[k] for k in (*self.kernel_spec.env, *_PASSED_ENV) if k in launch_env}
        env[RESTART_IN_PLACE_ENV] = "1"
        python = None
        if cmd and cmd[0]:  # the kernelspec's interpreter, when it names another one
            found = cmd[0] if os.path.isabs(cmd[0]) else shutil.which(cmd[0])
            if found and os.path.realpath(found) != os.path.realpath(sys.executable):
                python = found
        cwd = kwargs.get("cwd") or os.getcwd()
        return ContainerSpec(
            gpu=self.gpu, owner=f"kernel {self._name}", cpus=self.cpus, memory=self.memory, env=env,
            workdir=str(cwd), idle_timeout=0, queue_timeout=max(self.launch_timeout, 0.001),
            python=python, label=f"kernel {self._name}", image=self.image or None,
            volumes=list(self.volumes), secrets=list(self.secrets))

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict:
        restarting, self._restarting = self._restarting, False
        progress = _Progress(self)
        started = time.monotonic()
        view = None
        if restarting and self.container_id is not None:
            try:
                view = await on_own_thread(self._client.restart, self.container_id, progress)
                self.log.info("cellhop kernel %s: restarted in container %s in %.1f s, its GPUs kept",
                              self._name, self.container_id, time.monotonic() - started)
            except ContainerStartError as exc:
                self.container_id = None
                raise self._launch_error(exc, progress) from None
            except CellhopError as exc:  # the container is gone (it crashed): start a new one
                self.log.warning("cellhop kernel %s: container %s cannot be restarted (%s); starting a new one",
                                 self._name, self.container_id, exc)
                self.container_id = None
        if view is None:
            try:
                spec = self._spec(cmd, kwargs)
            except (CellhopError, ValueError) as exc:
                raise KernelLaunchError(400, f"The cellhop kernel '{self._name}' has a bad configuration: "
                                             f"{exc}. Fix its kernelspec's metadata.kernel_provisioner.config "
                                             "(jupyter kernelspec list shows where it lives).") from None
            self._cwd = str(spec.workdir)
            room = await self._notebook_yields(spec, kwargs)
            view = await self._start(spec, progress, started, room)
        info = self._reachable(dict(view["connection_info"]))
        info["key"] = info["key"].encode() if isinstance(info["key"], str) else info["key"]
        info.pop("kernel_name", None)
        self.connection_info = info
        self.container_id = view["id"]
        self._exited = None
        return info

    async def _notebook_yields(self, spec, kwargs: dict):
        """The idle containers of the kernel this one replaces in its notebook yield their GPUs to it
        (notebook_yield.py): a notebook switched to a GPU kernel does not wait for itself. Returns what
        makes room again (None when its notebook has no other kernel): while the new kernel queues, a
        container that was at work a moment ago (its idle not yet seen) yields once it is idle."""
        from ..gpu_request import GpuRequest
        from .notebook_yield import make_room, previous_kernels

        try:
            kernels = await previous_kernels(self, kwargs.get("env") or {})
        except Exception:  # making room is a courtesy: the kernel still queues as before
            self.log.warning("cellhop kernel %s: could not look for its notebook's other kernels", self._name,
                             exc_info=True)
            return None
        if not kernels:
            return None

        async def room() -> None:
            try:
                await on_own_thread(make_room, self._client, GpuRequest.parse(str(spec.gpu)), kernels, self.log)
            except Exception:
                self.log.warning("cellhop kernel %s: could not make room among its notebook's containers",
                                 self._name, exc_info=True)

        await room()
        return room

    def _reachable(self, info: dict) -> dict:
        """The connection info JupyterLab can use: a kernel speaking CurveZMQ (on a Ray node) is
        reached through a loopback tunnel here, since its secret key never leaves its node."""
        tunnel = getattr(self, "_tunnel", None)
        if "curve_serverkey" not in info:
            self._close_tunnel()
            return info
        if tunnel is None or not tunnel.leads_to(info):
            from .curve_tunnel import CurveTunnel

            self._close_tunnel()
            self._tunnel = tunnel = CurveTunnel(info)
        return dict(tunnel.local_info)

    def _close_tunnel(self) -> None:
        tunnel, self._tunnel = getattr(self, "_tunnel", None), None
        if tunnel is not None:
            tunnel.close()

    async def _start(self, spec, progress: _Progress, started: float, room=None) -> dict:
        """Start its container (`room`: makes room among its notebook's containers, again every
        ROOM_AGAIN seconds while queued)."""
        future = on_own_thread(self._client.start, spec, progress)
        deadline = started + self.launch_timeout
        next_room, making = time.monotonic() + ROOM_AGAIN, None
        while not future.done():
            await asyncio.wait([future], timeout=0.1)
            if room is not None and progress.phase in (None, "queued") and time.monotonic() > next_room \
                    and (making is None or making.done()):
                making, next_room = asyncio.ensure_future(room()), time.monotonic() + ROOM_AGAIN
            if (not future.done() and time.monotonic() > deadline and progress.container_id
                    and progress.phase == "starting" and not progress.timed_out):
                # Past the launch timeout while starting (the queue times itself out): stop it.
                progress.timed_out = True
                await on_own_thread(self._client.stop, progress.container_id, "kernel launch timed out")
                await asyncio.wait([future], timeout=30)
        try:
            view = future.result()
        except (CellhopError, ValueError) as exc:
            raise self._launch_error(exc, progress) from None
        except Exception as exc:
            raise self._launch_error(ContainerStartError(f"{type(exc).__name__}: {exc}"), progress) from None
        if progress.timed_out:  # it became ready just as it was stopped
            await on_own_thread(self._client.stop, view["id"], "kernel launch timed out")
            raise self._launch_error(ContainerStartError("timed out"), progress)
        self.log.info("cellhop kernel %s: ready in container %s in %.1f s (%s)", self._name, view["id"],
                      time.monotonic() - started, progress.describe())
        return view

    def _launch_error(self, exc: Exception, progress: _Progress) -> KernelLaunchError:
        """The message JupyterLab shows: which failure, and what to do."""
        name, phases = self._name, progress.describe()
        if progress.timed_out or isinstance(exc, QueueTimeout):
            phase = progress.phase or "queued"
            what = (f"it waited {self.launch_timeout:.0f} s for a GPU ({self.gpu}) and none freed up"
                    if phase == "queued" else f"its container was still {phase} after {self.launch_timeout:.0f} s")
            status, text = 503, (
                f"The cellhop kernel '{name}' did not start within its launch timeout: {what} "
                f"(timed out in phase: {phase}). {exc if isinstance(exc, QueueTimeout) else ''} "
                "Shut down a kernel or container holding that GPU (the cellhop panel or `%gpu` shows who holds "
                "it), pick another GPU type, or raise the launch timeout "
                "(c.CellhopProvisioner.launch_timeout, or launch_timeout in the kernelspec's provisioner config).")
        elif isinstance(exc, ImageNotFound):  # UnknownImage: the kernelspec names an image not built here
            status, text = 400, (
                f"The cellhop kernel '{name}' runs in image {self.image!r}, which this server does not know "
                f"({exc}). Build that image first (from a notebook: cellhop.Image(...).named({self.image!r})"
                ".build(), or POST cellhop/api/images), or change `image` in the kernelspec's "
                "metadata.kernel_provisioner.config (jupyter kernelspec list shows where it lives; null runs "
                "the server's own Python environment).")
        elif isinstance(exc, GpuRequestError):
            status, text = 400, (
                f"The cellhop kernel '{name}' asks for a GPU this host cannot give: {exc} "
                "Pick a kernel for a GPU this host has (the launcher lists them), or write a kernelspec for one "
                "with `jupyter cellhop kernelspec install --gpu TYPE`.")
        elif isinstance(exc, ContainerStartError):
            status, text = 500, (
                f"The cellhop kernel '{name}' failed while its container was starting: {exc}\n"
                "Nothing was left running and its GPUs were released. Check the kernelspec's env and "
                "interpreter (the container log above says why it died), then start the kernel again.")
        else:
            status, text = 400, (f"The cellhop kernel '{name}' could not start: {exc} "
                                 "Fix the kernelspec or the request, then start the kernel again.")
        if phases:
            text += f"\n(launch phases: {phases})"
        self.log.error("cellhop kernel %s: launch failed: %s", name, text)
        return KernelLaunchError(status, text.replace("  ", " "))

    async def poll(self) -> int | None:
        if self.container_id is None:
            return self._exited if self._exited is not None else 0
        if self._restarting or self._kill_pending:
            return 0  # the old kernel is done with; launch_kernel replaces it in the same container
        try:
            status = await self._call(self._client.poll, self.container_id)
        except ContainerNotFound:
            return 1
        except CellhopError as exc:  # the control plane cannot be reached: report alive, say why
            self.log.warning("cellhop kernel %s: cannot poll its container: %s", self._name, exc)
            return None
        if status is None:
            return None
        self._exited = _exit_code(status)
        return self._exited

    async def wait(self) -> int | None:
        while (code := await self.poll()) is None:
            await asyncio.sleep(0.1)
        return code

    async def send_signal(self, signum: int) -> None:
        if self.container_id is None or self._restarting or self._kill_pending:
            return
        if signum == signal.SIGINT:
            try:
                await self._call(self._client.interrupt, self.container_id)
            except ContainerNotFound:
                pass
        elif signum in (signal.SIGTERM, signal.SIGKILL):
            await self._stop("kernel shut down")
        elif signum != 0:
            self.log.warning("cellhop kernel %s: signal %d is not forwarded to a container "
                             "(interrupt, shutdown and restart are)", self._name, signum)

    async def kill(self, restart: bool = False) -> None:
        if restart:
            self._restarting = True  # the container stays; launch_kernel replaces its kernel process
            return
        # KernelManager.restart_kernel(now=True) kills with restart=False, then cleans up with
        # restart=True: the stop waits for cleanup() (or a moment), so a restart can keep the container.
        if self.container_id is not None and not self._kill_pending:
            self._kill_pending = True
            asyncio.get_running_loop().call_later(KILL_GRACE, lambda: asyncio.ensure_future(self._kill_now()))

    async def _kill_now(self) -> None:
        if self._kill_pending:
            self._kill_pending = False
            await self._stop("kernel killed")

    async def terminate(self, restart: bool = False) -> None:
        await self.kill(restart=restart)

    async def shutdown_requested(self, restart: bool = False) -> None:
        if restart:
            self._restarting = True  # the container kernel answers and stays up (container_kernel.py)

    async def _stop(self, reason: str) -> None:
        if self.container_id is None:
            return
        try:
            status = await on_own_thread(self._client.stop, self.container_id, reason)
            self._exited = _exit_code(status)
        except ContainerNotFound:
            self._exited = 1
        self.log.info("cellhop kernel %s: container %s stopped (%s); its GPUs are free", self._name,
                      self.container_id, reason)

    async def cleanup(self, restart: bool = False) -> None:
        if restart and (self._restarting or self._kill_pending):
            self._restarting, self._kill_pending = True, False
            return  # the container and its GPUs are kept for the relaunch
        self._kill_pending = False
        await self._stop("kernel shut down")
        self._close_tunnel()
        self.container_id = None
        self._restarting = False
        if self._owns_control and self._control_client is not None:
            client, self._control_client, self._owns_control = self._control_client, None, False
            await on_own_thread(client.close)

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return recommended

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return max(recommended, self.launch_timeout)

    def resolve_path(self, path: str) -> str | None:
        cwd = self._cwd
        if cwd is None:
            return None
        from pathlib import Path

        p = Path(path).expanduser()
        p = p if p.is_absolute() else Path(cwd) / p
        return str(p.resolve()) if p.exists() else None

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        conn = dict(info.get("connection_info") or {})
        if isinstance(conn.get("key"), bytes):
            conn["key"] = conn["key"].decode()
        info.update(connection_info=conn, container_id=self.container_id, gpu=self.gpu,
                    control_plane=repr(self._control_client))
        return info

    async def load_provisioner_info(self, provisioner_info: dict) -> None:
        """Reconnect to the container of a kernel started earlier (by this process or one before it).
        When the control plane no longer knows it (the server was restarted), poll() says it exited
        and cleanup() has nothing left to stop."""
        await super().load_provisioner_info(provisioner_info)
        conn = dict(self.connection_info or {})
        if isinstance(conn.get("key"), str):
            conn["key"] = conn["key"].encode()
        self.connection_info = conn
        self.container_id = provisioner_info.get("container_id")
        self._restarting = False
        if self.container_id is not None and await self.poll() is not None:
            self.log.info("cellhop kernel %s: container %s is gone; nothing to reconnect to",
                          self._name, self.container_id)


class _Progress:
    """The container's events during a launch: queue position and phases, logged as they come."""

    def __init__(self, provisioner: CellhopProvisioner):
        self.provisioner = provisioner
        self.container_id: str | None = None
        self.phase: str | None = None
        self.position: int | None = None
        self.timed_out = False
        self.started = time.monotonic()
        self.steps: list[str] = []

    def __call__(self, event: dict) -> None:
        if event.get("type", "container") != "container":
            return
        self.container_id = event.get("id") or self.container_id
        phase = event.get("phase")
        position = event.get("queue_position")
        log = self.provisioner.log
        elapsed = time.monotonic() - self.started
        if phase == "queued" and position is not None and position != self.position:
            self.position = position
            self.steps.append(f"queued, {position} ahead at {elapsed:.1f} s")
            log.info("cellhop kernel %s: queued for %s, %d request(s) ahead", self.provisioner._name,
                     self.provisioner.gpu, position)
        if phase and phase != self.phase:
            self.phase = phase
            self.steps.append(f"{phase} at {elapsed:.1f} s")
            log.info("cellhop kernel %s: %s (container %s, %.1f s)", self.provisioner._name, phase,
                     self.container_id, elapsed)

    def describe(self) -> str:
        return " → ".join(self.steps)
