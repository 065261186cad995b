"""From ``nxc build``'s options (and setup.toml) to what :func:`nxc.nixbuild.build` needs.

Precedence, highest first: the command line, the selected setup.toml variant's
``[<variant>.options]``, setup.toml's ``[options]``, nxc's defaults.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nxc.compat import canonical_flavour
from nxc.contracts import Manifest
from nxc.errors import BuildError, NxcError
from nxc.fsutil import read_text
from nxc.setup_toml import SetupChoice, SetupFile, choose


@dataclass(frozen=True)
class BuildPlan:
    flavour: str
    output: str | None  # None: the flake's output for `flavour`
    extra_args: list[str]
    parameters: dict[str, Any]
    setup: SetupChoice | None
    notes: list[str] = field(default_factory=list)


def parse_parameters(values: Sequence[str], path: Path | None) -> dict[str, Any]:
    """``--param-file`` (JSON or YAML mapping) then ``--param NAME=VALUE`` (VALUE is JSON,
    else a string)."""
    parameters: dict[str, Any] = {}
    if path is not None:
        text = read_text(path, "parameter file")
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise NxcError(f"{path}: malformed parameter file: {first}") from None
        if not isinstance(loaded, dict):
            raise NxcError(f"{path}: a parameter file must be a mapping of name: value")
        parameters.update(loaded)
    for value in values:
        name, sep, raw = value.partition("=")
        if not sep or not name.strip():
            raise NxcError(f"--param {value!r}: expected NAME=VALUE")
        try:
            parameters[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            parameters[name.strip()] = raw
    return parameters


def plan(
    project_root: Path,
    *,
    known_flavours: Sequence[str],
    default_flavour: str,
    flavour: str | None = None,
    output: str | None = None,
    show_trace: bool = False,
    offline: bool = False,
    override_input: Sequence[tuple[str, str]] = (),
    nix_flags: str | None = None,
    params: Sequence[str] = (),
    param_file: Path | None = None,
    setup_variant: str | None = None,
    setup_params: Sequence[str] = (),
) -> BuildPlan:
    setup, defaults = choose(SetupFile.load(project_root), setup_variant, setup_params)
    chosen = flavour or defaults.flavour
    if output is None and chosen is None and defaults.composition_flavour:
        output = defaults.composition_flavour
    if output is not None:
        composition, sep, out_flavour = output.partition("::")
        if not sep or not composition:
            raise NxcError(f"-C {output!r}: expected COMPOSITION::FLAVOUR")
        # The flake keeps NixOS Compose's names (c::vm) as aliases: build the real one.
        out_flavour = canonical_flavour(out_flavour, known_flavours)
        output = f"{composition}::{out_flavour}"
        chosen = chosen or out_flavour
    canonical = canonical_flavour(chosen or default_flavour, known_flavours)
    extra: list[str] = []
    if show_trace:
        extra.append("--show-trace")
    if offline:
        extra.append("--offline")
    for name, ref in override_input:
        extra += ["--override-input", name, ref]
    if nix_flags is not None:
        try:
            extra += shlex.split(nix_flags)
        except ValueError as exc:
            raise NxcError(f"--nix-flags: {exc}") from None
    else:
        extra += defaults.nix_flags
    return BuildPlan(
        flavour=canonical,
        output=output,
        extra_args=extra,
        parameters=parse_parameters(params, param_file),
        setup=setup,
        notes=defaults.notes,
    )


def check_setup_used(build_plan: BuildPlan, manifest: Manifest, flake: Path) -> None:
    """A variant or params asked for but absent from the manifest: the flake ignores setup."""
    choice = build_plan.setup
    if choice is None or (choice.variant is None and not choice.params):
        return
    recorded = manifest.raw.get("setup")
    if not isinstance(recorded, dict) or recorded.get("variant") != choice.variant:
        raise BuildError(
            f"{flake}/flake.nix does not hand setup.toml to nxc.lib.compose, so --setup and "
            "--setup-param changed nothing: add `setup = ./setup.toml;` to its arguments"
        )
