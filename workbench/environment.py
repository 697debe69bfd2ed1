"""Where a run ran: device name, torch version and git commit."""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path


def device_name(device: str | None = None) -> str:
    """``cuda:0`` -> the GPU's name; anything else -> ``CPU (<processor>, N cores)``."""
    import torch
    if (device is None or str(device).startswith("cuda")) and torch.cuda.is_available():
        index = torch.device(device or "cuda").index or 0
        return torch.cuda.get_device_name(index)
    import os
    return f"CPU ({_cpu_model()}, {os.cpu_count()} cores)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The workbench checkout's commit (with ``+dirty`` when it has local changes), or ''."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                                capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{commit}+dirty" if commit and dirty else commit


def environment_info(device: str | None = None) -> dict[str, str]:
    import torch
    return {"device": device_name(device), "torch_version": torch.__version__,
            "git_commit": git_commit()}
