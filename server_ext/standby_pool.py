"""Standby containers: started, sandboxed container kernels that hold no GPU, claimed by requests.

A container's cold start is mostly the kernel's: bubblewrap, Python, ipykernel,
then the user's first imports. The standby pool keeps `c.Cellhop.standby`
containers of the default image (and of the images requests used most
recently, c.Cellhop.standby_images) started and ready, their preloads
imported (`c.Cellhop.preload`, `Image.preload(...)`, and what notebooks said
they import: `hint_preload`). A request whose container a standby can be
(same image and limits; no volumes, secrets, variables, working folder or
interpreter of its own) queues for its GPUs as always; once the scheduler
granted them, ContainerManager.start claims a standby: the runtime makes the
leased GPUs visible to that one container (runtimes/gpu_attach.py), the
kernel is told its GPUs and id, and the container takes the request's id,
owner and spec. A claimed standby is never returned: its work done, it stops
like any container; the pool starts another in the background.

Standbys are listed with `"standby": true` (the panel and `%gpu` show them),
are never stopped for idleness, and stop with the control plane.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from typing import NamedTuple

from ..container import ContainerSpec, ExitStatus, Phase
from ..gpu_request import GpuRequest
from ..image_spec import HINTABLE
from .container_record import Container
from .kernel_setup import run_silently

log = logging.getLogger("cellhop")

RETRY_AFTER = 30.0  # seconds before a key whose standby failed to start is tried again
MAX_PRELOAD = 32  # most modules a standby imports


class StandbyKey(NamedTuple):
    """What a standby is started with, and so which requests it can serve."""

    image: str | None
    cpus: int | None
    memory: int | None

    @classmethod
    def of(cls, spec: ContainerSpec) -> StandbyKey | None:
        """The key of the standby that can become `spec`'s container, or None when none can."""
        if spec.volumes or spec.secrets or spec.env or spec.python:  # a working folder: attached at the claim
            return None
        return cls(spec.image, spec.cpus, spec.memory)

    def describe(self) -> str:
        return "the default image" if self.image is None else f"image {self.image[:12]}"


class StandbyPool:
    """The standby containers of one ContainerManager (see the module docstring)."""

    def __init__(self, manager, count: int, max_images: int = 2, preload: list[str] | None = None):
        self.manager = manager
        self.count = max(0, count)
        self.max_images = max(0, max_images)
        self.preload: list[str] = list(dict.fromkeys(preload or []))[:MAX_PRELOAD]  # for the default image
        config = manager.config
        self._default = StandbyKey(None, config.default_cpus or None,
                                   manager.default_memory())  # what a plain request's spec becomes
        self._images: OrderedDict[StandbyKey, None] = OrderedDict()  # recently used image keys, newest last
        self._ready: dict[StandbyKey, list] = {}
        self._starting: dict[StandbyKey, int] = {}
        self._failed: dict[StandbyKey, float] = {}  # key -> when its last start failed
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cellhop-standby", daemon=True)
        self._thread.start()

    # -- what requests do ----------------------------------------------------------------------
    def take(self, spec: ContainerSpec):
        """A ready standby that can become `spec`'s container (taken out of the pool), or None. Also notes
        the image, so the next request for it finds a standby."""
        key = StandbyKey.of(spec)
        if key is None:
            return None
        if key.image is not None and self.max_images:
            with self._lock:
                self._images.pop(key, None)
                self._images[key] = None
                while len(self._images) > self.max_images:
                    self._images.popitem(last=False)
        found = None
        with self._lock:
            ready = self._ready.get(key, [])
            while ready:
                candidate = ready.pop(0)
                if candidate.phase == Phase.READY and self.manager.runtime.poll(candidate) is None:
                    candidate.set_phase(Phase.STARTING)  # no event: the monitor leaves it be from now on
                    found = candidate
                    break
        self._wake.set()  # refill (or start the first of a newly used image)
        return found

    def claim_for(self, container) -> bool:
        """Give `container` (GPUs allocated, phase starting) a ready standby's kernel: the runtime makes the
        GPUs visible to it alone (runtimes/gpu_attach.py), the kernel is told its GPUs and id, and the
        standby's record goes. False when no standby can be (the caller starts a fresh container)."""
        if not self.manager.runtime.claimable(container):
            return False
        standby = self.take(container.spec)
        if standby is None:
            return False
        from .runtimes.gpu_attach import CannotAttach

        manager, runtime = self.manager, self.manager.runtime
        try:
            runtime.claim(standby, container)
            env = runtime.gpu_environment(container)
            code = "__import__('os').environ.update(%r)" % (env,)
            where = getattr(runtime, "claimed_workdir", None)
            inside = where(standby) if where is not None and container.spec.workdir is not None else None
            if inside:  # the notebook's folder, attached by the claim (late_mounts.py)
                code += "; __import__('os').chdir(%r)" % (inside,)
            self._set_up(standby, code, timeout=10.0)
        except Exception as exc:
            if not isinstance(exc, CannotAttach):
                log.warning("cellhop: claiming standby container %s failed (%s); starting a fresh one",
                            standby.id, exc)
            self._drop(standby, f"could not be claimed: {exc}")
            return False
        with manager._lock:
            stopped = container.phase != Phase.STARTING
            if not stopped:
                runtime.rekey(standby.id, container.id)
                container.adopt_from(standby)
                container.claimed_from = standby.id
                manager.activity.rename(standby.id, container.id)
                manager._forget(standby)
        if stopped:  # stopped while the claim went on: the process is still the standby's
            self._drop(standby, "its claimer was stopped")
            manager._await_exit(container)
            raise manager._stopped_while(container, "starting")
        manager._emit(standby, removed=True, claimed_by=container.id)
        container.last_activity = time.monotonic()
        manager._set_phase(container, Phase.READY)
        return True

    def _set_up(self, standby, code: str, timeout: float) -> None:
        """Run setup code (preloads, a claim's variables) silently in a standby's kernel (kernel_setup.py)."""
        run_silently(standby.connection_info, code, timeout=timeout,
                     ended=lambda: self.manager.runtime.poll(standby) is not None,
                     what=f"standby container {standby.id}")

    def _drop(self, standby, reason: str) -> None:
        """Stop a standby that was taken but not claimed, and forget it."""
        manager = self.manager
        manager._finish(standby, ExitStatus(stopped=True, reason=reason), kill=True)
        manager._forget(standby)
        manager._delete_folder(standby)
        manager._emit(standby, removed=True)

    def start_one(self, key: StandbyKey, preload: list[str]):
        """Start a standby container for `key` (no GPU) and import `preload` in it; ready when it returns."""
        manager = self.manager
        container = Container(id=secrets.token_hex(6), spec=standby_spec(key), standby=True)
        manager.runtime.check_spec(container.spec)
        with manager._lock:
            manager._containers[container.id] = container
        container.directory = manager.runtime.container_directory(container.id)
        manager._set_phase(container, Phase.STARTING)
        manager._launch_until_ready(container, "start")
        if preload:
            code = ("import importlib, sys\nfor _m in %r:\n    try:\n        importlib.import_module(_m)\n"
                    "    except Exception as _e:\n        print('cellhop standby: preloading', _m, 'failed:', _e, "
                    "file=sys.__stderr__)\ndel _m\n" % (preload,))
            try:
                self._set_up(container, code, timeout=max(manager.config.start_timeout, 120.0))
            except Exception:
                manager.stop(container.id, reason="its preload did not finish")
                raise
        return container

    def hint_preload(self, modules: list[str]) -> list[str]:
        """Heavy modules notebooks import: standbys of the default image started from now on import them
        too. Only well-known libraries (HINTABLE) are taken: a standby serves every notebook of the host, so
        no notebook may make it import what that notebook chose. Returns the preload list now."""
        clean = [m for m in modules if isinstance(m, str) and m in HINTABLE]
        with self._lock:
            self.preload = list(dict.fromkeys(self.preload + clean))[:MAX_PRELOAD]
            return list(self.preload)

    # -- views -----------------------------------------------------------------------------------
    def view(self) -> list[dict]:
        """[{image, ready, starting, wanted, preload}] for `%gpu`, the panel and GET gpus."""
        with self._lock:
            keys = self._keys()
            return [{"image": k.image, "cpus": k.cpus, "memory": k.memory,
                     "ready": sum(1 for c in self._ready.get(k, []) if c.phase == Phase.READY),
                     "starting": self._starting.get(k, 0), "wanted": self.count,
                     "preload": list(self.preload) if k.image is None else None} for k in keys]

    # -- the refill thread -----------------------------------------------------------------------
    def _keys(self) -> list[StandbyKey]:
        return [self._default, *self._images] if self.count else []

    def _missing(self) -> StandbyKey | None:
        now = time.monotonic()
        with self._lock:
            for key in self._keys():
                ready = [c for c in self._ready.get(key, []) if c.phase == Phase.READY]
                self._ready[key] = ready
                if len(ready) + self._starting.get(key, 0) < self.count and \
                        now - self._failed.get(key, -RETRY_AFTER) >= RETRY_AFTER:
                    self._starting[key] = self._starting.get(key, 0) + 1
                    return key
        return None

    def _run(self) -> None:
        while not self._closed.is_set():
            key = self._missing()
            if key is None:
                self._wake.wait(2.0)  # a standby that died is noticed by the manager's monitor; look again
                self._wake.clear()
                continue
            try:
                container = self.start_one(key, self._preload_of(key))
            except Exception as exc:
                if not self._closed.is_set():
                    log.warning("cellhop: a standby container for %s did not start (%s); trying again in %.0f s",
                                key.describe(), exc, RETRY_AFTER)
                with self._lock:
                    self._failed[key] = time.monotonic()
                    self._starting[key] -= 1
                continue
            with self._lock:
                self._starting[key] -= 1
                self._failed.pop(key, None)
                if key in self._keys() and not self._closed.is_set():
                    self._ready.setdefault(key, []).append(container)
                    container = None
            if container is not None:  # its image is no longer among the recent ones, or closing
                self.manager.stop(container.id, reason="standby no longer wanted")

    def _preload_of(self, key: StandbyKey) -> list[str]:
        if key.image is None:
            with self._lock:
                return list(self.preload)
        try:
            from .images.runtime_env import image_view

            return list(image_view(self.manager.runtime.images_root, key.image).get("preload") or [])[:MAX_PRELOAD]
        except Exception:
            return []

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=5)


def standby_pool_for(manager) -> StandbyPool | None:
    """The standby pool of a ContainerManager, where its runtime can claim standbys and c.Cellhop.standby
    (default: 1 where the host has GPUs, real or simulated) asks for any."""
    count = manager.config.standby
    if count is None:
        count = 1 if manager.inventory.gpus else 0
    if count <= 0 or not manager.runtime.supports_standby:
        return None
    return StandbyPool(manager, count, manager.config.standby_images, list(manager.config.preload))


def standby_spec(key: StandbyKey) -> ContainerSpec:
    """The spec a standby starts with: no GPU, the key's image and limits, never idle-stopped."""
    return ContainerSpec(gpu=GpuRequest(), owner="cellhop standby", label=f"standby ({key.describe()})",
                         cpus=key.cpus, memory=key.memory, image=key.image, idle_timeout=0)
