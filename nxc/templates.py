"""Example compositions used as templates (``nxc init -t NAME``).

They live in the top-level ``compositions/`` directory of nxc's flake (also what
``nix flake init -t`` offers and what CI boots).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from nxc.errors import NxcError
from nxc.paths import flake_root, flake_url

PLACEHOLDER = "@NXC_FLAKE_URL@"


def template_dir() -> Path:
    return flake_root() / "compositions"


def available_templates() -> dict[str, str]:
    """Template name -> first line of its README."""
    templates = {}
    for directory in sorted(template_dir().iterdir()):
        readme = directory / "README.md"
        if directory.is_dir() and (directory / "flake.nix").is_file():
            summary = ""
            if readme.is_file():
                lines = [ln.strip("# ").strip() for ln in readme.read_text().splitlines()]
                summary = next((ln for ln in lines if ln), "")
            templates[directory.name] = summary
    return templates


def instantiate(name: str, target: Path, force: bool = False) -> list[Path]:
    """Copy template ``name`` into ``target`` with nxc's flake reference filled in."""
    templates = available_templates()
    if name not in templates:
        raise NxcError(f"unknown template '{name}' (available: {', '.join(templates)})")
    source = template_dir() / name
    target = target.resolve()
    if target.exists() and not target.is_dir():
        raise NxcError(f"{target}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise NxcError(f"{target}: directory is not empty (use --force to write into it)")
    written: list[Path] = []
    url = flake_url()
    for path in sorted(source.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts:
            continue
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            shutil.copyfile(path, destination)
        else:
            destination.write_text(text.replace(PLACEHOLDER, url))
        shutil.copymode(path, destination)
        written.append(destination)
    _track_in_git(target, written)
    return written


def _track_in_git(target: Path, files: list[Path]) -> None:
    """Inside a git work tree a flake sees only tracked files: add the new ones."""
    inside = subprocess.run(
        ["git", "-C", str(target), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        text=True,
        check=False,
    )
    if inside.returncode == 0 and inside.stdout.strip() == "true":
        subprocess.run(
            ["git", "-C", str(target), "add", "--", *map(str, files)],
            capture_output=True,
            check=False,
        )
