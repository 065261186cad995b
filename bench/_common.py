"""Helpers shared by the benchmarks: a built selftest project and timing utilities."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def nxc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "nxc.cli", *args], cwd=cwd, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"nxc {' '.join(args)} failed:\n{result.stderr}")
    return result


def selftest_project() -> Path:
    """A freshly initialised and built selftest composition (nix reuses its store)."""
    directory = Path(os.environ.get("NXC_BENCH_DIR") or tempfile.mkdtemp(prefix="nxc-bench-"))
    if not (directory / "flake.nix").exists():
        nxc("init", "-t", "selftest", str(directory), cwd=Path.cwd())
    nxc("build", "--offline", cwd=directory)
    return directory


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
