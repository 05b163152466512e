"""The host's GPUs and their live metrics, read from NVML through pynvml.

Nothing here touches NVML at import: `read_nvml_inventory` initialises NVML,
reads the devices and shuts it down again; `NvmlSession` keeps NVML open for
repeated metric samples until `close()`. A host without a usable NVIDIA
driver is a normal case, not an error: the inventory comes back empty with a
`reason` in plain words. This module logs nothing; callers decide what to say.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pynvml

from ..errors import GpuMetricsUnavailable
from ..gpu_types import type_from_nvml
from ..inventory import Gpu, Inventory

__all__ = ["GpuMetricsUnavailable", "NvmlSession", "read_nvml_inventory", "sample_gpu_metrics"]

_T = TypeVar("_T")

# NVML failures that are expected on hosts without a working GPU stack, as plain words.
_INIT_REASONS: dict[int, str] = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: (
        "no NVIDIA driver library (libnvidia-ml.so.1) on this host, so no GPU is present"
    ),
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: (
        "NVIDIA driver not loaded: libnvidia-ml.so.1 is installed but the kernel driver "
        "is not running (check `nvidia-smi`)"
    ),
    pynvml.NVML_ERROR_NO_PERMISSION: (
        "no permission to query the NVIDIA driver (check access to /dev/nvidia*)"
    ),
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
        "the NVIDIA driver library and kernel module have different versions "
        "(reboot, or reinstall the driver)"
    ),
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND: (
        "the NVIDIA driver library (libnvidia-ml.so.1) is too old for nvidia-ml-py "
        "(update the driver)"
    ),
}


def _error_text(exc: BaseException) -> str:
    """NVML's own words for an error, never raising (its __str__ may call into NVML)."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a message must never fail
        return type(exc).__name__


def _init_failure_reason(exc: BaseException) -> str:
    """Why NVML did not start, in words a user understands once."""
    value = getattr(exc, "value", None)
    if isinstance(value, int) and value in _INIT_REASONS:
        return _INIT_REASONS[value]
    if isinstance(exc, pynvml.NVMLLibraryMismatchError):
        return _INIT_REASONS[pynvml.NVML_ERROR_FUNCTION_NOT_FOUND]
    return f"NVML could not start ({_error_text(exc)})"


def _start_nvml() -> None:
    """nvmlInit, with every expected failure turned into GpuMetricsUnavailable."""
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError, pynvml.NVMLLibraryMismatchError, OSError) as exc:
        raise GpuMetricsUnavailable(_init_failure_reason(exc)) from None


def _stop_nvml() -> None:
    try:
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        pass


def _query(fn: Callable[..., _T], *args: Any) -> _T | None:
    """One NVML query; None where NVML cannot answer it (not supported, lost, ...)."""
    try:
        return fn(*args)
    except (pynvml.NVMLError, pynvml.NVMLLibraryMismatchError):
        return None


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _read_device(index: int) -> Gpu | None:
    """The GPU at an NVML index, or None when it cannot even be identified."""
    handle = _query(pynvml.nvmlDeviceGetHandleByIndex, index)
    uuid = _query(pynvml.nvmlDeviceGetUUID, handle) if handle is not None else None
    if not uuid:
        return None
    raw_name = _query(pynvml.nvmlDeviceGetName, handle)
    name = _text(raw_name).strip() if raw_name else "unknown NVIDIA GPU"
    memory = _query(pynvml.nvmlDeviceGetMemoryInfo, handle)
    memory_total = int(memory.total) if memory is not None else 0
    mig = _query(pynvml.nvmlDeviceGetMigMode, handle)
    minor = _query(pynvml.nvmlDeviceGetMinorNumber, handle)
    return Gpu(
        index=index,
        uuid=_text(uuid),
        name=name,
        type=type_from_nvml(name, memory_total),
        memory_total=memory_total,
        mig_mode=None if mig is None else bool(mig[0]),
        minor=None if minor is None else int(minor),
    )


def read_nvml_inventory() -> Inventory:
    """The host's GPUs as NVML reports them; empty, with a reason, when there are none."""
    try:
        _start_nvml()
    except GpuMetricsUnavailable as exc:
        return Inventory(reason=str(exc))
    try:
        raw_driver = _query(pynvml.nvmlSystemGetDriverVersion)
        driver = _text(raw_driver) if raw_driver else None
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:
            return Inventory(
                reason=f"NVML could not count the GPU devices ({_error_text(exc)})",
                driver_version=driver,
            )
        if count == 0:
            return Inventory(reason="NVML found no GPU devices", driver_version=driver)
        gpus = tuple(gpu for gpu in map(_read_device, range(count)) if gpu is not None)
        reason = None if gpus else (
            f"NVML lists {count} GPU device{'s' if count != 1 else ''} but none could be "
            "queried (no permission, or the GPU fell off the bus)"
        )
        return Inventory(gpus=gpus, reason=reason, driver_version=driver)
    finally:
        _stop_nvml()


class NvmlSession:
    """NVML kept open across metric samples: initialised on first use, until `close()`.

    Thread-safe; usable as a context manager. Raises `GpuMetricsUnavailable`
    (with the plain-words reason) when NVML cannot start on this host.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = False
        self._handles: dict[str, Any] = {}

    def __enter__(self) -> NvmlSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._open

    def _ensure_open(self) -> None:
        if not self._open:
            _start_nvml()
            self._open = True

    def _handle(self, uuid: str) -> Any | None:
        handle = self._handles.get(uuid)
        if handle is None:
            handle = _query(pynvml.nvmlDeviceGetHandleByUUID, uuid)
            if handle is not None:
                self._handles[uuid] = handle
        return handle

    def sample_gpu_metrics(self, uuids: Sequence[str]) -> list[dict[str, Any]]:
        """One dict per uuid: `uuid`, plus each reading NVML gives for that GPU.

        Readings: `utilization` (GPU %), `memory_used` and `memory_total` (bytes),
        `power_w` (watts), `temperature_c`, `processes` ([{pid, used_memory}]).
        A reading NVML does not support is left out; an unknown uuid gets only `uuid`.
        """
        with self._lock:
            self._ensure_open()
            return [self._sample_one(uuid) for uuid in uuids]

    def _sample_one(self, uuid: str) -> dict[str, Any]:
        sample: dict[str, Any] = {"uuid": uuid}
        handle = self._handle(uuid)
        if handle is None:
            return sample
        util = _query(pynvml.nvmlDeviceGetUtilizationRates, handle)
        if util is not None:
            sample["utilization"] = int(util.gpu)
        memory = _query(pynvml.nvmlDeviceGetMemoryInfo, handle)
        if memory is not None:
            sample["memory_used"] = int(memory.used)
            sample["memory_total"] = int(memory.total)
        milliwatts = _query(pynvml.nvmlDeviceGetPowerUsage, handle)
        if milliwatts is not None:
            sample["power_w"] = milliwatts / 1000.0
        temperature = _query(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU)
        if temperature is not None:
            sample["temperature_c"] = int(temperature)
        processes = _query(pynvml.nvmlDeviceGetComputeRunningProcesses, handle)
        if processes is not None:
            sample["processes"] = [
                {"pid": int(p.pid), "used_memory": p.usedGpuMemory} for p in processes
            ]
        return sample

    def close(self) -> None:
        """Shut NVML down (once per successful init); the session may be used again."""
        with self._lock:
            if self._open:
                self._open = False
                self._handles.clear()
                _stop_nvml()


_default_session = NvmlSession()  # opens NVML only when first sampled


def sample_gpu_metrics(uuids: Sequence[str]) -> list[dict[str, Any]]:
    """`NvmlSession.sample_gpu_metrics` on a process-wide session."""
    return _default_session.sample_gpu_metrics(uuids)
