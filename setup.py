"""setuptools hook: the wheel carries nxc's own flake, so an installed nxc can hand
new compositions a flake reference to its Nix library (``nxc/_flake``, found by
``nxc.paths.flake_root()``).

Everything else about the package is in pyproject.toml. nix/package.nix builds the
package through this same hook, so the two never disagree on what the flake holds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# What lib.compose needs at run time, relative to the repository root. The flake's
# `nxcRoot` is the directory holding these, so the agent and the version file keep
# their place under nxc/.
FLAKE_FILES = (
    "flake.nix",
    "flake.lock",
    "nix",
    "flavours",
    "compositions",
    "nxc/agent",
    "nxc/__init__.py",
)
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "result", "result-*")


class BuildPyWithFlake(build_py):  # type: ignore[misc]
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install uses the checkout's own flake
        target = Path(self.build_lib) / "nxc" / "_flake"
        shutil.rmtree(target, ignore_errors=True)
        for name in FLAKE_FILES:
            source = ROOT / name
            if not source.exists():
                raise SystemExit(f"setup.py: {source} is missing: cannot ship nxc's flake")
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, destination, ignore=IGNORED)
            else:
                shutil.copy2(source, destination)


setup(cmdclass={"build_py": BuildPyWithFlake})
