"""Shared fixtures: small valid documents and a way to run the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

# Real sshd servers in network namespaces (`sshd_cluster` fixture factory).
pytest_plugins = ["tests.fixtures.sshd_netns"]


def pytest_configure(config: pytest.Config) -> None:
    # nxc keeps project state outside projects (under NXC_STATE_HOME): give the test
    # session its own, so tests never see the user's runs nor leave any behind.
    if "NXC_STATE_HOME" not in os.environ:
        import tempfile

        os.environ["NXC_STATE_HOME"] = tempfile.mkdtemp(prefix="nxc-test-state-")


def run_nxc(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real ``nxc`` entry point in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "nxc.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sample_manifest(tmp_path: Path, **role_overrides: Any) -> dict[str, Any]:
    kernel = tmp_path / "kernel"
    initrd = tmp_path / "initrd"
    kernel.write_bytes(b"k")
    initrd.write_bytes(b"i")
    role = {"quantity": 2, "kernel": "kernel", "initrd": "initrd", "kernel_params": "rdinit=/init"}
    role.update(role_overrides)
    return {
        "nxc_manifest": 1,
        "composition": "demo",
        "flavour": "vm-ramdisk",
        "image_kind": "selftest",
        "roles": {"server": dict(role, quantity=1), "client": role},
    }


@pytest.fixture
def manifest_file(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(sample_manifest(tmp_path)))
    return path
