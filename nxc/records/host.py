"""The host a run ran on, as far as results depend on it: CPU, cores, memory,
kernel, operating system, Python and Nix versions, and the accelerator the runtime
chose. Nothing identifying beyond that (no host name, no user name)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["host_facts"]


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str | None:
    text = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or None


def memory_mb(meminfo: str | None = None) -> int | None:
    text = _read("/proc/meminfo") if meminfo is None else meminfo
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) // 1024
    return None


def os_name(os_release: str | None = None) -> str | None:
    text = _read("/etc/os-release") if os_release is None else os_release
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"') or None
    return None


def _nix_version() -> str | None:
    from nxc.errors import NxcError
    from nxc.nixbuild import nix_version

    try:
        return nix_version()
    except NxcError:  # no nix on this host: a manifest built elsewhere
        return None


def host_facts(accelerator: str | None = None) -> dict[str, Any]:
    cores: int | None
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cores": cores,
        "memory_mb": memory_mb(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "os": os_name(),
        "python": platform.python_version(),
        "nix_version": _nix_version(),
        "accelerator": accelerator,
    }
