"""Typed options a flavour declares for ``nxc start`` (VM memory, dockerd, G5k walltime…).

A runtime lists its :class:`Option` s; the CLI turns each into a ``--name`` option
shown under the flavour's heading in ``nxc start --help``, and the composition can
set defaults in ``flavours.<flavour>.<name>`` (carried by the build manifest as
``flavour_options``). What a run uses, from strongest to weakest:

1. the command line for that role (``--memory server=512``),
2. the command line for every role (``--memory 512``),
3. the composition for that role (``flavours.vm-ramdisk.memory.server = 512``),
4. the composition for every role (``flavours.vm-ramdisk.memory = 512``),
5. the option's own fallback (the runtime may still consult the role's resources).

Values are parsed and checked here (type, choices, minimum, role names), so a
runtime receives a :class:`FlavourOptions` it can trust.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from nxc.errors import NxcError

__all__ = ["FlavourOptions", "Option", "OptionError", "resolve_options"]

OptionType = Literal["int", "float", "str", "bool", "choice"]


class OptionError(NxcError):
    """A flavour option's value is malformed, out of range or names an unknown role."""


@dataclass(frozen=True)
class Option:
    """One option of a flavour. ``name`` is the long option without dashes."""

    name: str
    help: str
    type: OptionType = "str"
    default: Any = None
    choices: tuple[str, ...] = ()
    per_role: bool = False
    minimum: float | None = None
    metavar: str | None = None
    multiple: bool = False  # a list of values (never per role)

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    def shown_metavar(self) -> str:
        if self.metavar:
            return self.metavar
        base = {"int": "N", "float": "X", "bool": "BOOL", "choice": "|".join(self.choices)}.get(
            self.type, "VALUE"
        )
        return f"[ROLE=]{base}" if self.per_role else base

    def convert(self, value: Any, where: str) -> Any:
        """``value`` (text from the command line, or JSON from the composition) typed."""
        try:
            if self.type == "int":
                if isinstance(value, bool) or not isinstance(value, int | str):
                    raise ValueError
                typed: Any = int(value)
            elif self.type == "float":
                if isinstance(value, bool) or not isinstance(value, int | float | str):
                    raise ValueError
                typed = float(value)
            elif self.type == "bool":
                if isinstance(value, bool):
                    typed = value
                elif str(value).lower() in ("1", "true", "yes", "on"):
                    typed = True
                elif str(value).lower() in ("0", "false", "no", "off"):
                    typed = False
                else:
                    raise ValueError
            else:
                if not isinstance(value, str):
                    raise ValueError
                typed = value
        except ValueError:
            expected = {"int": "a whole number", "float": "a number", "bool": "true or false"}
            raise OptionError(
                f"{where}: {value!r} is not {expected.get(self.type, 'text')}"
            ) from None
        if self.choices and typed not in self.choices:
            raise OptionError(f"{where}: {typed!r} is not one of {', '.join(self.choices)}")
        if self.minimum is not None and typed < self.minimum:
            raise OptionError(f"{where}: {typed!r} is below the minimum {self.minimum:g}")
        return typed


@dataclass(frozen=True)
class FlavourOptions:
    """The values of one flavour's options for one run (see the module docs)."""

    flavour: str
    # option name -> role ("" = every role) -> value
    values: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def get(self, name: str, role: str | None = None, default: Any = None) -> Any:
        by_role = self.values.get(name, {})
        if role is not None and role in by_role:
            return by_role[role]
        if "" in by_role:
            return by_role[""]
        return default

    def is_set(self, name: str, role: str | None = None) -> bool:
        by_role = self.values.get(name, {})
        return "" in by_role or (role is not None and role in by_role)

    def as_dict(self) -> dict[str, Any]:
        """For run records: ``{name: value}`` or ``{name: {role: value}}``."""
        out: dict[str, Any] = {}
        for name, by_role in self.values.items():
            out[name] = by_role[""] if set(by_role) == {""} else dict(by_role)
        return out


def _split_role(text: str, option: Option, roles: Iterable[str], where: str) -> tuple[str, str]:
    role, sep, value = text.rpartition("=")
    if not sep:
        return "", text
    if not role:
        raise OptionError(f"{where} {text!r}: expected VALUE or ROLE=VALUE")
    if role not in roles:
        known = ", ".join(sorted(roles)) or "none"
        raise OptionError(f"{where} {text!r}: no role named '{role}' (roles: {known})")
    return role, value


def resolve_options(
    flavour: str,
    declared: Iterable[Option],
    command_line: Mapping[str, Any],
    composition: Mapping[str, Any],
    roles: Iterable[str],
) -> FlavourOptions:
    """Merge command line values over composition defaults, typed and checked.

    ``command_line`` maps option names to what click parsed (a tuple of strings for
    per-role and multiple options, a string or None otherwise); ``composition`` is
    the manifest's ``flavour_options[flavour]``.
    """
    options = {o.name: o for o in declared}
    role_names = list(roles)
    unknown = sorted(set(composition) - set(options))
    if unknown:
        known = ", ".join(sorted(options)) or "none"
        raise OptionError(
            f"composition: flavours.{flavour}.{unknown[0]}: flavour {flavour} has no such "
            f"option (it has: {known})"
        )
    values: dict[str, dict[str, Any]] = {}
    for name, option in options.items():
        merged: dict[str, Any] = {}
        where = f"composition: flavours.{flavour}.{name}"
        raw = composition.get(name)
        if isinstance(raw, Mapping) and option.per_role:
            for role, value in raw.items():
                if role not in role_names:
                    known = ", ".join(sorted(role_names))
                    raise OptionError(f"{where}.{role}: no such role (roles: {known})")
                merged[role] = option.convert(value, f"{where}.{role}")
        elif isinstance(raw, list) and option.multiple:
            merged[""] = [option.convert(v, where) for v in raw]
        elif raw is not None:
            merged[""] = option.convert(raw, where)
        given = command_line.get(name)
        if given not in (None, (), []):
            if option.multiple:
                merged[""] = [option.convert(v, option.flag) for v in given]
            elif option.per_role:
                items = given if isinstance(given, tuple | list) else (given,)
                from_cli: dict[str, Any] = {}
                for text in items:
                    role, value = _split_role(str(text), option, role_names, option.flag)
                    from_cli[role] = option.convert(value, f"{option.flag} {text!r}")
                if "" in from_cli:
                    # --memory 512 overrides every composition value, per role too.
                    merged = {}
                merged.update(from_cli)
            else:
                merged[""] = option.convert(given, option.flag)
        if not merged and option.default is not None:
            merged[""] = option.default
        if merged:
            values[name] = merged
    return FlavourOptions(flavour, values)
