"""What a figure or a reference run was measured on: one home for benchmarks and results."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows where that is absent."""
    info = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
             if line.startswith("model name")] if info.exists() else []
    return names[0] if names else platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, object]:
    return {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "processor": cpu_name(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
