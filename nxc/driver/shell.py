"""The interactive driver: a ptpython shell with every node bound by name.

``interactive_shell(driver, history=path)`` prints a banner listing the nodes and
their roles, then opens ptpython with the same names a scenario sees
(:meth:`~nxc.driver.driver.Driver.globals`). It needs a terminal: without one it
raises :class:`~nxc.errors.NxcError` (one line) instead of hanging or garbling.

Ctrl-C while a command runs kills that command on its node (the transports do it on
``KeyboardInterrupt``) and the shell shows what happened, e.g. ``KeyboardInterrupt:
node1: interrupted; the command was killed on node1``; the channel stays
usable for the next command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from nxc.driver.driver import Driver, python_name
from nxc.errors import NxcError

__all__ = ["banner", "interactive_shell"]


def banner(driver: Driver) -> str:
    """What the shell prints first: nodes by role, and the other names defined."""
    lines = ["nxc driver shell: Ctrl-D to leave (the nodes keep running)."]
    if not driver.machines:
        lines.append("no nodes")
    aliases = {machine.name: alias for alias, machine in driver.role_aliases().items()}
    for role, machines in driver.roles.items():
        names = ", ".join(python_name(m.name) for m in machines)
        alias = aliases.get(machines[0].name) if len(machines) == 1 else None
        lines.append(f"  {role} ({len(machines)}): {names}" + (f" (or {alias})" if alias else ""))
    hidden = {python_name(m.name) for m in driver.machines} | set(aliases.values()) | {"machine"}
    others = sorted(key for key in driver.globals() if key not in hidden)
    lines.append("also: " + ", ".join(others))
    if driver.machines:
        first = python_name(driver.machines[0].name)
        lines.append(
            f'try: {first}.succeed("uname -a"), help({first}), '
            'run_parallel(lambda m: m.succeed("hostname"))'
        )
    return "\n".join(lines)


def _require_terminal(stdin: TextIO, stdout: TextIO) -> None:
    for stream, name in ((stdin, "standard input"), (stdout, "standard output")):
        isatty = getattr(stream, "isatty", None)
        if isatty is None or not isatty():
            raise NxcError(
                f"the interactive driver needs a terminal, but {name} is not one; "
                "run a scenario instead: nxc driver FILE (or nxc driver -t)"
            )


def _interrupt_printer(repl: Any) -> Any:
    def show(exc: KeyboardInterrupt) -> None:
        text = f"KeyboardInterrupt: {exc}" if str(exc) else "KeyboardInterrupt"
        repl.app.output.write(f"\r{text}\n\n")
        repl.app.output.flush()

    return show


def interactive_shell(
    driver: Driver,
    history: Path | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> None:
    """Open the ptpython shell on ``driver``'s names; return when the user leaves.

    ``history``: file keeping the input history across sessions (its directory is
    created), normally ``<project state dir>/shell-history``.
    """
    _require_terminal(stdin or sys.stdin, stdout or sys.stdout)
    try:
        from ptpython.repl import embed
    except ImportError as err:  # a broken install; ptpython is a dependency
        raise NxcError(f"the interactive driver needs ptpython ({err})") from None
    history_file: str | None = None
    if history is not None:
        history.parent.mkdir(parents=True, exist_ok=True)
        history_file = str(history)
    names: dict[str, Any] = driver.globals()
    names["__name__"] = "__nxc_shell__"
    print(banner(driver), file=sys.stderr)

    def configure(repl: Any) -> None:
        repl.confirm_exit = False
        repl.show_signature = True
        repl.show_docstring = False
        # ptpython prints a bare "KeyboardInterrupt"; the transports' message says
        # whether the node's command was killed.
        repl._handle_keyboard_interrupt = _interrupt_printer(repl)

    embed(
        globals=names,
        locals=names,
        configure=configure,
        history_filename=history_file,
        title="nxc driver",
    )
