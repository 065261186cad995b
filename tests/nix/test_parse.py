"""Every .nix file nxc ships parses (nix-instantiate --parse)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.nix.nixutil import REPO

SKIP_PARTS = {".git", "node_modules", "__pycache__", ".venv", "venv", "build"}


def nix_files() -> list[Path]:
    return sorted(
        p for p in REPO.rglob("*.nix") if not SKIP_PARTS.intersection(p.relative_to(REPO).parts)
    )


@pytest.mark.nix
@pytest.mark.skipif(shutil.which("nix-instantiate") is None, reason="nix is not installed")
@pytest.mark.parametrize("path", nix_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_parses(path: Path) -> None:
    done = subprocess.run(
        ["nix-instantiate", "--parse", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{path}: {done.stderr.strip()}"


def test_the_library_and_flavours_are_there() -> None:
    names = {p.relative_to(REPO).as_posix() for p in nix_files()}
    for required in [
        "flake.nix",
        "nix/lib/default.nix",
        "nix/lib/compose.nix",
        "flavours/vm-ramdisk/module.nix",
        "flavours/g5k-ramdisk/module.nix",
        "flavours/g5k-image/module.nix",
        "flavours/docker/module.nix",
        "nix/modules/agent.nix",
    ]:
        assert required in names
