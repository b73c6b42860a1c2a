"""GPU inventory: which NVIDIA GPUs this process may use, and how much memory each has free.

The planner never talks to NVML itself; it takes a `GpuInventory`, so placement is plain logic
tested with readings written by hand. `NvmlProbe` is the one real reader. It never raises:
a machine without the library, the driver or a GPU gets an empty inventory whose `reason` says
why, and the plan repeats that reason instead of silently running on the CPU.

Device indices are CUDA's, which is what llama.cpp's `main_gpu` and `tensor_split` mean. NVML
numbers GPUs by PCI bus, CUDA by `CUDA_VISIBLE_DEVICES`, so the probe applies that variable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class GpuDevice(BaseModel):
    """One GPU as CUDA numbers it, with its memory in bytes."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    name: str
    total_bytes: int = Field(ge=0)
    free_bytes: int = Field(ge=0)
    uuid: str | None = None


class GpuInventory(BaseModel):
    """The usable GPUs; `reason` explains an empty (or incomplete) list."""

    model_config = ConfigDict(frozen=True)

    devices: tuple[GpuDevice, ...] = ()
    reason: str | None = None

    def device(self, index: int) -> GpuDevice | None:
        return next((d for d in self.devices if d.index == index), None)


class NvmlProbe:
    """Reads NVIDIA GPUs through NVML (the `nvidia-ml-py` package). Never raises.

    `nvml` and `environ` are injectable so the failure paths can be tested without a driver.
    """

    def __init__(self, nvml: Any = None, environ: Mapping[str, str] | None = None):
        self._nvml = nvml
        self._environ = os.environ if environ is None else environ

    def read(self) -> GpuInventory:
        nvml = self._nvml
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError as e:
                return GpuInventory(reason=f"NVML not available: nvidia-ml-py is not installed ({e})")
        try:
            nvml.nvmlInit()
        except Exception as e:  # NVMLError subclasses, OSError from ctypes: all mean "no NVML here"
            return GpuInventory(reason=f"NVML not available: {_describe(nvml, e)}")
        try:
            return self._read_devices(nvml)
        except Exception as e:  # a driver fault mid-read must not take the server down
            log.warning("reading GPUs through NVML failed: %s", e)
            return GpuInventory(reason=f"NVML failed while reading GPUs: {_describe(nvml, e)}")
        finally:
            try:
                nvml.nvmlShutdown()
            except Exception:  # shutting down is best effort; the readings are already taken
                pass

    def _read_devices(self, nvml: Any) -> GpuInventory:
        count = nvml.nvmlDeviceGetCount()
        if count == 0:
            return GpuInventory(reason="no NVIDIA GPU found")
        found: list[GpuDevice] = []
        problems: list[str] = []
        for nvml_index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(nvml_index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                found.append(
                    GpuDevice(
                        index=nvml_index,
                        name=_text(nvml.nvmlDeviceGetName(handle)),
                        total_bytes=int(memory.total),
                        free_bytes=min(int(memory.free), int(memory.total)),
                        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    )
                )
            except Exception as e:  # one broken GPU (fallen off the bus) should not hide the others
                problems.append(f"GPU {nvml_index} skipped: {_describe(nvml, e)}")
        visible, why = _apply_visible_devices(found, self._environ.get("CUDA_VISIBLE_DEVICES"))
        reasons = problems + ([why] if why else [])
        if not visible and not reasons:
            reasons.append("no NVIDIA GPU found")
        return GpuInventory(devices=tuple(visible), reason="; ".join(reasons) or None)


def _apply_visible_devices(devices: list[GpuDevice], visible: str | None) -> tuple[list[GpuDevice], str | None]:
    """Keep and renumber the devices CUDA_VISIBLE_DEVICES lets CUDA see, in its order.

    Entries are NVML indices or UUIDs (full or a prefix); CUDA stops at the first invalid entry.
    """
    if visible is None:
        return devices, None
    chosen: list[GpuDevice] = []
    for entry in (e.strip() for e in visible.split(",")):
        match = None
        if entry.isdigit():
            match = next((d for d in devices if d.index == int(entry)), None)
        elif entry.startswith("GPU-") or entry.startswith("MIG-"):
            match = next((d for d in devices if d.uuid and d.uuid.startswith(entry)), None)
        if match is None or match in chosen:
            break
        chosen.append(match)
    renumbered = [d.model_copy(update={"index": i}) for i, d in enumerate(chosen)]
    if not renumbered:
        return [], f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    return renumbered, None


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _describe(nvml: Any, error: Exception) -> str:
    """Plain words for the NVML errors people meet, with the library's text for the rest."""
    known = {
        "NVMLError_LibraryNotFound": "libnvidia-ml.so.1 not found (no NVIDIA driver installed?)",
        "NVMLError_DriverNotLoaded": "the NVIDIA driver is not loaded",
        "NVMLError_NoPermission": "no permission to query the GPUs",
        "NVMLError_GpuIsLost": "the GPU has fallen off the bus",
    }
    for name, text in known.items():
        cls = getattr(nvml, name, None)
        if isinstance(cls, type) and isinstance(error, cls):
            return text
    return str(error) or type(error).__name__
