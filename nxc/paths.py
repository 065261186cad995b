"""Where nxc's shipped data lives (schemas, agent, templates, its Nix flake)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMA_DIR = PACKAGE_DIR / "contracts" / "schemas"
AGENT_DIR = PACKAGE_DIR / "agent"


def flake_root() -> Path:
    """The directory holding nxc's own flake.nix and nix/ library.

    In a source checkout that is the repository root; an installed wheel carries a
    copy under ``nxc/_flake``.
    """
    checkout = PACKAGE_DIR.parent
    if (checkout / "flake.nix").is_file() and (checkout / "nix").is_dir():
        return checkout
    return PACKAGE_DIR / "_flake"


def flake_url() -> str:
    """A flake reference to nxc's own flake usable as an input of a user's flake.

    A git checkout is referenced with ``git+file`` so that only tracked files are
    copied to the store (not virtualenvs or caches lying in the work tree).
    """
    root = flake_root()
    if (root / ".git").exists():
        return f"git+file://{root}"
    return f"path:{root}"
