"""NixOS Compose's setup.toml: build settings and named variants next to a composition.

The Nix side (nix/lib/setup.nix) merges the selected variant and hands the result to
the composition as ``setup``; this module is what ``nxc build`` does with the same
file before calling nix:

- ``--setup NAME`` selects a variant (else ``[project] selected`` in the file, else
  none) and ``--setup-param k=v`` overrides one of its params; both reach the
  evaluation through ``NXC_SETUP_VARIANT`` / ``NXC_SETUP_PARAMS`` (impure), and are
  checked here first so that a typo is one line, not a nix trace;
- the ``[options]`` table (merged with the variant's) gives defaults for the command:
  ``flavour``, ``composition-flavour`` and ``nix-flags``; the command line wins.

Unlike NixOS Compose, nxc never rewrites setup.toml (it wrote the selected variant and
the overrides into it).
"""

from __future__ import annotations

import json
import shlex
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nxc.errors import NxcError
from nxc.fsutil import read_text

FILE_NAME = "setup.toml"
RESERVED = ("project", "options", "params", "overrides", "override-params", "build")
UNSUPPORTED_TABLES = ("overrides", "build")
USED_OPTIONS = ("flavour", "composition-flavour", "nix-flags")


@dataclass(frozen=True)
class SetupChoice:
    """What ``nxc build`` asked of setup.toml: a variant and param overrides."""

    variant: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.variant is not None:
            env["NXC_SETUP_VARIANT"] = self.variant
        if self.params:
            env["NXC_SETUP_PARAMS"] = json.dumps(self.params)
        return env


@dataclass(frozen=True)
class BuildDefaults:
    """Defaults for ``nxc build`` from the selected setup's [options]."""

    flavour: str | None = None
    composition_flavour: str | None = None
    nix_flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merged[key] = _merge(old, value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class SetupFile:
    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, project_root: Path) -> SetupFile | None:
        path = project_root / FILE_NAME
        if not path.is_file():
            return None
        text = read_text(path, "setup file")
        try:
            return cls(path, tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise NxcError(f"{path}: malformed TOML: {exc}") from None

    def variants(self) -> list[str]:
        return sorted(k for k, v in self.data.items() if k not in RESERVED and isinstance(v, dict))

    def file_variant(self) -> str | None:
        project = self.data.get("project")
        selected = project.get("selected") if isinstance(project, dict) else None
        return selected if isinstance(selected, str) and selected else None

    def selected(self, variant: str | None) -> dict[str, Any]:
        """The file with ``variant`` merged over its top level (as setup.nix does)."""
        if variant is None:
            return self.data
        if variant not in self.variants():
            listed = ", ".join(self.variants()) or "none"
            raise NxcError(f"{self.path}: no variant '{variant}' (variants: {listed})")
        return _merge(self.data, self.data[variant])


def parse_setup_params(values: Sequence[str]) -> dict[str, Any]:
    """``k=v`` pairs; ``v`` is JSON (10, true, "x") when it parses, else a string."""
    parsed: dict[str, Any] = {}
    for value in values:
        name, sep, raw = value.partition("=")
        if not sep or not name.strip():
            raise NxcError(f"--setup-param {value!r}: expected NAME=VALUE")
        try:
            parsed[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[name.strip()] = raw
    return parsed


def choose(
    setup: SetupFile | None, variant: str | None, raw_params: Sequence[str]
) -> tuple[SetupChoice | None, BuildDefaults]:
    """Check ``--setup``/``--setup-param`` against the file; the options it sets."""
    if setup is None:
        if variant is not None or raw_params:
            flag = "--setup" if variant is not None else "--setup-param"
            raise NxcError(f"{flag} given but this composition has no {FILE_NAME}")
        return None, BuildDefaults()
    effective = variant if variant is not None else setup.file_variant()
    merged = setup.selected(effective)
    for table in UNSUPPORTED_TABLES:
        if table in merged:
            prefix = f"{effective}." if effective and table in setup.data.get(effective, {}) else ""
            raise NxcError(
                f"{setup.path}: [{prefix}{table}] (package overrides through overlays) is not "
                "supported by nxc: apply them with an overlay module (see docs/migrating.md)"
            )
    declared = merged.get("params", {})
    if not isinstance(declared, dict):
        raise NxcError(f"{setup.path}: [params] must be a table")
    params = parse_setup_params(raw_params)
    for name in params:
        if name not in declared:
            listed = ", ".join(sorted(declared)) or "none"
            where = f"variant '{effective}'" if effective else "[params]"
            raise NxcError(
                f"--setup-param {name}: not a param of {where} in {setup.path} (declared: {listed})"
            )
    return SetupChoice(variant, params), _defaults(setup, merged, effective)


def _defaults(setup: SetupFile, merged: dict[str, Any], variant: str | None) -> BuildDefaults:
    options = merged.get("options", {})
    if not isinstance(options, dict):
        raise NxcError(f"{setup.path}: [options] must be a table")
    notes = [f"{setup.path.name}: using variant '{variant}'"] if variant else []
    for key in sorted(options):
        if key not in USED_OPTIONS:
            notes.append(f"{setup.path.name}: option '{key}' is not used by nxc (ignored)")

    def text(key: str) -> str | None:
        value = options.get(key)
        if value is not None and not isinstance(value, str):
            raise NxcError(f"{setup.path}: option '{key}' must be a string")
        return value

    flags = text("nix-flags")
    try:
        nix_flags = shlex.split(flags) if flags else []
    except ValueError as exc:
        raise NxcError(f"{setup.path}: option 'nix-flags': {exc}") from None
    return BuildDefaults(
        flavour=text("flavour"),
        composition_flavour=text("composition-flavour"),
        nix_flags=nix_flags,
        notes=notes,
    )
