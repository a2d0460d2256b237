"""Where a profile was measured: device, memory, driver, CUDA and library versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes")


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in (*LIBRARIES, "lora-budget"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment(device: str) -> dict[str, Any]:
    """The environment record of a profile (the keys ``store.ENVIRONMENT_KEYS`` requires).

    On CUDA: the device name and total memory from PyTorch, the driver version from NVML when
    ``pynvml`` is installed (else None), the CUDA runtime PyTorch was built with.
    On CPU (or CUDA requested where PyTorch sees no device): no GPU name and no device memory.
    """
    import torch

    env: dict[str, Any] = {
        "device": device,
        "gpu_name": None,
        "gpu_memory_bytes": None,
        "gpu_capability": None,
        "driver_version": None,
        "cuda_version": torch.version.cuda,
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": library_versions(),
    }
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        env["gpu_name"] = props.name
        env["gpu_memory_bytes"] = int(props.total_memory)
        env["gpu_capability"] = f"{props.major}.{props.minor}"
        env["driver_version"] = nvml_driver_version()
    return env


def _nvml() -> Any:
    """pynvml, initialised, or None when it is not installed or finds no driver."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # pynvml raises NVMLError subclasses for every missing-driver case
        return None
    return pynvml


def nvml_driver_version() -> str | None:
    nvml = _nvml()
    if nvml is None:
        return None
    version = nvml.nvmlSystemGetDriverVersion()
    return version.decode() if isinstance(version, bytes) else str(version)


def nvml_process_bytes(device_index: int = 0) -> int | None:
    """GPU memory NVML attributes to this process (CUDA context included), or None.

    None without pynvml, or when this process is not listed (a container's PID namespace
    hides it from the driver).
    """
    nvml = _nvml()
    if nvml is None:
        return None
    handle = nvml.nvmlDeviceGetHandleByIndex(device_index)
    for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
        if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
            return int(proc.usedGpuMemory)
    return None
