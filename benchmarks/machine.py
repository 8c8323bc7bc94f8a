"""What the figures were measured on."""

from __future__ import annotations

import os
import platform

import torch


def machine(device: torch.device) -> dict[str, object]:
    return {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
