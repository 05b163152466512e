"""The control plane: one inventory, one scheduler, one set of containers, one event stream.

Hosted by the jupyter_server extension (app.py), by `cellhop serve`, or
embedded in a kernel process (kernel/embedded_control_plane.py). Images, volumes
and secrets hang off it as their issues add them.
"""

from __future__ import annotations

import logging
import threading

from .config import Cellhop
from ..container import Phase
from ..inventory import Gpu
from .container_record import Container
from .container_manager import ContainerManager
from .event_bus import EventBus, Listener, Subscription
from .process_usage import ProcessTreeUsage
from .usage_sampler import UsageSampler

log = logging.getLogger("cellhop")


class ControlPlane:
    """Owns the containers of one host (for one server or one embedded kernel). `close()` stops them."""

    def __init__(self, config: Cellhop | None = None, manager: ContainerManager | None = None):
        self.config = config or Cellhop()
        self.manager = manager or ContainerManager(self.config)
        self.bus = EventBus(self.sample_metrics)
        self._unsubscribe = self.manager.subscribe(self.bus.publish)
        self._nvml = None
        self._usage: dict[str, ProcessTreeUsage] = {}
        self._lock = threading.Lock()
        self.usage_sampler = UsageSampler(self, self.config.usage_sample_interval, self.config.idle_holder_after,
                                          self.config.idle_holder_busy)

    @property
    def inventory(self):
        return self.manager.inventory

    @property
    def images(self):
        """The image store and builder (images/service.py) under state_dir/images; made on first use."""
        with self._lock:
            if getattr(self, "_images", None) is None:
                from .images.service import Images, images_root

                in_use = lambda: {c.spec.image for c in self.manager.list()  # noqa: E731
                                  if c.spec.image and c.phase != Phase.EXITED}
                self._images = Images(images_root(self.config), publish=self.publish, in_use=in_use)
            return self._images

    @property
    def volumes(self):
        """The VolumeStore (volumes.py) of this control plane's state directory."""
        return self.manager.storage.volumes

    @property
    def secrets(self):
        """The SecretStore (secrets.py): stored secrets and this process's session ones."""
        return self.manager.storage.secrets

    # -- views ------------------------------------------------------------------
    def gpus_view(self) -> dict:
        """GET gpus: the inventory with who holds what."""
        inv = self.inventory
        holders = self.manager.scheduler.holders()
        return {
            "gpus": [{**g.to_dict(), "holder": holders.get(g.uuid)} for g in inv.gpus],
            "simulated": inv.simulated,
            "reason": inv.reason,
            "driver_version": inv.driver_version,
            "runtime": self.manager.runtime.describe(),
            "standby": self.manager.standby.view() if self.manager.standby is not None else [],
        }

    def containers_view(self) -> list[dict]:
        """GET containers; a ready container says how long it has been idle (`idle_seconds`; None while its
        kernel works), so whoever waits for its GPU can see it."""
        views = []
        for c in self.manager.list():
            view = c.to_dict()
            if c.phase == Phase.READY:
                view["idle_seconds"] = self.manager.activity.idle_for(c.id, c.last_activity)
            views.append(view)
        return views

    # -- events -----------------------------------------------------------------
    def subscribe(self, listener: Listener, metrics_interval: float | None = None,
                  paused: bool = False) -> Subscription:
        """Lifecycle events, and `metrics` events every `metrics_interval` s (None: no metrics).

        The listener first gets a `hello` event with the current GPUs and containers.
        """
        listener({"type": "hello", "gpus": self.gpus_view(), "containers": self.containers_view(),
                  "interval": metrics_interval, "paused": paused})
        return self.bus.subscribe(listener, metrics_interval, paused)

    def publish(self, event: dict) -> None:
        """For images, volumes and the like: an event every subscriber sees."""
        self.bus.publish(event)

    # -- metrics ----------------------------------------------------------------
    def sample_metrics(self) -> list[dict]:
        gpus = self.inventory.gpus
        if not gpus:
            return []
        if self.inventory.simulated:
            return self._simulated_samples(gpus)
        if self._nvml is None:
            from .nvml import NvmlSession

            self._nvml = NvmlSession()
        return self._nvml.sample_gpu_metrics([g.uuid for g in gpus])

    def _holding_containers(self) -> dict[str, Container]:
        held = {}
        for c in self.manager.list():
            if c.phase in (Phase.STARTING, Phase.READY, Phase.STOPPING):
                for g in c.gpus:
                    held[g.uuid] = c
        return held

    def _simulated_samples(self, gpus: tuple[Gpu, ...]) -> list[dict]:
        """Simulated cards report the real CPU use and memory of the container holding them."""
        held = self._holding_containers()
        foreign = {u for u, h in self.manager.scheduler.holders().items() if h and u not in held}
        samples = []
        with self._lock:
            measured: dict[str, tuple] = {}  # container id -> (cpu %, rss): one walk of its processes a sample
            for g in gpus:
                sample = {"uuid": g.uuid, "simulated": True, "memory_total": g.memory_total}
                container = held.get(g.uuid)
                pid = getattr(container.handle, "pid", None) if container is not None else None
                if pid is not None:
                    if container.id not in measured:
                        usage = self._usage.setdefault(container.id, ProcessTreeUsage(pid))
                        measured[container.id] = usage.sample()
                    cpu, rss = measured[container.id]
                    share = max(1, len(container.gpus))
                    sample["utilization"] = int(min(100.0, (cpu or 0.0) / share))
                    sample["memory_used"] = min(rss // share, g.memory_total)
                    sample["processes"] = [{"pid": pid, "used_memory": rss // share}]
                elif container is None and g.uuid not in foreign:  # free; another control plane's: unknown
                    sample["utilization"] = 0
                    sample["memory_used"] = 0
                    sample["processes"] = []
                samples.append(sample)
            for key in set(self._usage) - set(measured):
                del self._usage[key]
        return samples

    def close(self) -> None:
        self.usage_sampler.close()
        self.bus.close()
        self._unsubscribe()
        self.manager.close()
        if self._nvml is not None:
            self._nvml.close()
