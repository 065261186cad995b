"""Helpers for tests that run the real nix (Debian's nix-bin 2.8 is enough)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "nix" / "lib"
NIX = ["nix", "--offline", "--extra-experimental-features", "nix-command flakes"]

needs_nix = pytest.mark.skipif(shutil.which("nix") is None, reason="nix is not installed")


def nix_eval(expr: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Evaluate ``expr`` with ``lib`` bound to nxc's Nix library."""
    full = f"let lib = import {LIB}; in {expr}"
    return subprocess.run(
        [*NIX, "eval", "--json", "--impure", "--expr", full],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def eval_json(expr: str, env: dict[str, str] | None = None) -> Any:
    done = nix_eval(expr, env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def eval_error(expr: str) -> str:
    done = nix_eval(expr)
    assert done.returncode != 0, f"expected an evaluation error, got {done.stdout}"
    return done.stderr
