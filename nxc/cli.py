"""The ``nxc`` command line: a thin layer over the modules a script can import too."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from nxc import __version__
from nxc.errors import NxcError


def _fail(message: str, code: int = 1) -> NoReturn:
    first, _, rest = message.partition("\n")
    click.secho(f"nxc: error: {first}", fg="red", err=True)
    if rest:
        click.echo(rest, err=True)
    sys.exit(code)


@contextmanager
def _status(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner on a terminal, plain lines otherwise; yields an update function."""
    from rich.console import Console

    console = Console(stderr=True)
    if console.is_terminal:
        with console.status(message) as live:
            yield lambda text: live.update(f"{message}: {text}")
    else:
        click.echo(message, err=True)
        yield lambda text: click.echo(f"  {text}", err=True)


def _project(directory: str | None) -> Any:
    from nxc.project import Project

    return Project.find(Path(directory) if directory else None)


project_option = click.option(
    "-p",
    "--project",
    "project_dir",
    metavar="DIR",
    help="Composition directory (default: nearest directory with a flake.nix).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nxc")
def cli() -> None:
    """Compose reproducible distributed environments with Nix and run experiments on them.

    \b
    Typical session:
      nxc init -t selftest demo && cd demo
      nxc build                 # nix build the default flavour (vm-ramdisk)
      nxc start -r node=3       # boot 3 VMs, wait until every node is ready
      nxc driver -t             # run the composition's testScript
      nxc stop                  # stop everything the run created
    """


@cli.command()
@click.option("-t", "--template", default="basic", show_default=True, help="Template name.")
@click.option("--list", "list_templates", is_flag=True, help="List the templates and exit.")
@click.option("--force", is_flag=True, help="Write into a non-empty directory.")
@click.argument("directory", required=False, default=".")
def init(template: str, list_templates: bool, force: bool, directory: str) -> None:
    """Create a composition from a template (no network needed).

    \b
    Example:
      nxc init -t selftest my-experiment
    """
    from nxc.templates import available_templates, instantiate

    if list_templates:
        for name, summary in available_templates().items():
            click.echo(f"{name:14} {summary}")
        return
    written = instantiate(template, Path(directory), force=force)
    click.echo(f"created {len(written)} files in {Path(directory).resolve()} from '{template}'")
    click.echo(f"next: cd {directory} && nxc build && nxc start")


@cli.command()
@project_option
@click.option(
    "-f", "--flavour", default=None,
    help="Flavour to build (default: vm-ramdisk; NixOS Compose's `vm` is an alias).",
)  # fmt: skip
@click.option(
    "-C", "--composition-flavour", "output", metavar="COMPOSITION::FLAVOUR",
    help="Build this flake output instead (for flakes holding several compositions).",
)  # fmt: skip
@click.option("-L", "--list", "list_outputs", is_flag=True, help="List buildable outputs and exit.")
@click.option("--show-trace", is_flag=True, help="Pass --show-trace to nix.")
@click.option("--offline", is_flag=True, help="Pass --offline to nix (never download).")
@click.option(
    "--override-input", nargs=2, multiple=True, metavar="INPUT FLAKEREF",
    help="Pass --override-input to nix (e.g. nixpkgs path:/local/nixpkgs).",
)  # fmt: skip
@click.option(
    "--nix-flags", metavar="FLAGS",
    help='More nix flags, e.g. "--impure --override-input x path:/d" (default: setup.toml\'s).',
)  # fmt: skip
@click.option(
    "--param", "params", multiple=True, metavar="NAME=VALUE",
    help="Override a composition parameter (VALUE is JSON, else a string).",
)  # fmt: skip
@click.option(
    "--param-file", type=click.Path(path_type=Path),
    help="JSON or YAML file of parameter overrides (--param wins).",
)  # fmt: skip
@click.option(
    "-s", "--setup", "setup_variant", metavar="VARIANT",
    help="Select a setup.toml variant (NixOS Compose).",
)  # fmt: skip
@click.option(
    "--setup-param", "setup_params", multiple=True, metavar="NAME=VALUE",
    help="Override a setup.toml param (VALUE is JSON, else a string).",
)  # fmt: skip
def build(
    project_dir: str | None,
    flavour: str | None,
    output: str | None,
    list_outputs: bool,
    show_trace: bool,
    offline: bool,
    override_input: tuple[tuple[str, str], ...],
    nix_flags: str | None,
    params: tuple[str, ...],
    param_file: Path | None,
    setup_variant: str | None,
    setup_params: tuple[str, ...],
) -> None:
    """Build the composition with Nix into a flavour and record the result.

    \b
    Examples:
      nxc build                          # default composition, vm-ramdisk
      nxc build -f g5k-ramdisk
      nxc build -C webserver::docker --show-trace
      nxc build --param clients=8 --param-file params.yaml
      nxc build --setup dev --setup-param b=20     # setup.toml variant (NixOS Compose)
    """
    from nxc import buildopts, nixbuild
    from nxc.flavours import DEFAULT_FLAVOUR, FLAVOURS

    project = _project(project_dir)
    plan = buildopts.plan(
        project.root,
        known_flavours=FLAVOURS,
        default_flavour=DEFAULT_FLAVOUR,
        flavour=flavour,
        output=output,
        show_trace=show_trace,
        offline=offline,
        override_input=override_input,
        nix_flags=nix_flags,
        params=params,
        param_file=param_file,
        setup_variant=setup_variant,
        setup_params=setup_params,
    )
    for note in plan.notes:
        click.echo(note, err=True)
    if list_outputs:
        for name in nixbuild.list_outputs(project.root, extra_args=plan.extra_args):
            click.echo(name)
        return
    output = plan.output or nixbuild.default_output(project.root, plan.flavour, plan.extra_args)
    with _status(f"building {output}") as update:
        result = nixbuild.build(
            project.root,
            output,
            extra_args=plan.extra_args,
            progress=update,
            parameters=plan.parameters or None,
            setup=plan.setup,
        )
    from nxc.contracts import Manifest

    manifest = Manifest.load(result.manifest)
    buildopts.check_setup_used(plan, manifest, project.root)
    project.ensure_state_dir()
    project.record_build(manifest.flavour, result.to_record())
    click.echo(f"built {output}: {result.out_path}")
    for role in manifest.roles.values():
        click.echo(f"  role {role.name}: {role.quantity} node(s) by default")


def _parse_resource(values: tuple[str, ...], what: str) -> dict[str, int]:
    parsed: dict[str, int] = {}
    for value in values:
        role, sep, number = value.rpartition("=")
        if not number.isdigit() or int(number) <= 0 or (sep and not role):
            raise NxcError(f"--{what} {value!r}: expected N or ROLE=N with N > 0")
        parsed[role] = int(number)
    return parsed


@cli.command()
@project_option
@click.option("-f", "--flavour", default=None, help="Which build to start (default: vm-ramdisk).")
@click.option(
    "-m",
    "--manifest",
    "manifest_path",
    type=click.Path(path_type=Path),
    help="Start this manifest.json (e.g. built by another tool) instead.",
)
@click.option(
    "-r",
    "--role",
    "roles",
    multiple=True,
    metavar="ROLE=N",
    help="Number of nodes of ROLE (repeatable; default: the composition's).",
)
@click.option("-t", "--test", "run_test", is_flag=True, help="Run the testScript once ready.")
@click.option("-I", "--interactive", is_flag=True, help="Open the driver shell once ready.")
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for readiness.")
@click.option(
    "--accel",
    type=click.Choice(["auto", "kvm", "tcg"]),
    default="auto",
    show_default=True,
    help="VM accelerator (auto probes KVM with a short boot).",
)
@click.option("--memory", multiple=True, metavar="[ROLE=]MiB", help="VM memory override.")
@click.option("--cpus", multiple=True, metavar="[ROLE=]N", help="VM CPU count override.")
@click.option(
    "--netem",
    "netem_file",
    type=click.Path(path_type=Path),
    help="Apply this network topology (YAML) once ready.",
)
@click.option(
    "--no-netem", is_flag=True, help="Do not apply the composition's own topology at start."
)
def start(
    project_dir: str | None,
    flavour: str | None,
    manifest_path: Path | None,
    roles: tuple[str, ...],
    run_test: bool,
    interactive: bool,
    timeout: float,
    accel: str,
    memory: tuple[str, ...],
    cpus: tuple[str, ...],
    netem_file: Path | None,
    no_netem: bool,
) -> None:
    """Start the built composition and wait until every node is ready.

    \b
    Examples:
      nxc start -r node=3              # 3 nodes of role 'node'
      nxc start -r server=1 -r client=4 -t
      nxc start --memory 512 --cpus server=2 -I
    """
    from nxc import session
    from nxc.expand import parse_role_overrides, role_quantities
    from nxc.flavours import StartOptions

    overrides = parse_role_overrides(roles)
    options = StartOptions(
        ready_timeout=timeout,
        accel=accel,
        memory_mb=_parse_resource(memory, "memory"),
        cpus=_parse_resource(cpus, "cpus"),
    )
    project = _project(project_dir)
    manifest = session.manifest_for(project, flavour, manifest_path)
    role_quantities(manifest, overrides)  # bad -r values fail before anything starts
    with project.lock(), _status(f"starting {manifest.composition} ({manifest.flavour})") as up:
        current = session.start(project, manifest, overrides, options, progress=up)
    nodes = current.deployment.nodes
    click.echo(f"{len(nodes)} nodes ready: {' '.join(n.name for n in nodes)}")
    if netem_file is not None:
        from nxc.netem.cli import apply_file

        apply_file(current, netem_file)
    elif current.manifest.topology and not no_netem:
        from nxc.netem.cli import apply_manifest

        apply_manifest(current)
        click.echo("applied the composition's network topology (nxc netem show)")
    if run_test:
        sys.exit(_run_driver(current, script=None))
    if interactive:
        _run_driver(current, script=None, interactive=True)


def _run_driver(current: Any, script: Path | None, interactive: bool = False) -> int:
    """Run SCRIPT, else the composition's testScript, else (interactive) the shell."""
    from nxc.driver.session import open_driver

    with open_driver(current) as driver:
        if interactive:
            from nxc.driver.shell import interactive_shell

            interactive_shell(driver, history=current.project.state_dir / "shell-history")
            return 0
        if script is not None:
            try:
                text = script.read_text()
            except OSError as exc:
                raise NxcError(f"{script}: cannot read script: {exc.strerror}") from None
            name = str(script)
        else:
            text = current.manifest.test_script or ""
            if not text.strip():
                composition = current.manifest.composition
                raise NxcError(f"the composition '{composition}' has no testScript")
            name = "testScript"
        ok = driver.run_script(text, name)
        click.echo(f"report: {driver.out_dir / 'report.json'} and report.xml")
        return 0 if ok else 1


@cli.command()
@project_option
@click.option("-t", "--test", "run_test", is_flag=True, help="Run the composition's testScript.")
@click.argument("script", required=False, type=click.Path(path_type=Path))
def driver(project_dir: str | None, run_test: bool, script: Path | None) -> None:
    """Drive the running nodes: a shell, the testScript (-t) or a SCRIPT file.

    Script mode exits non-zero when the scenario fails and writes report.json and
    report.xml (JUnit) in the run's directory.

    \b
    Examples:
      nxc driver                 # ptpython shell, every node bound by name
      nxc driver -t              # the composition's testScript
      nxc driver scenario.py
    """
    from nxc import session

    current = session.running(_project(project_dir))
    if run_test and script is not None:
        raise NxcError("give either -t or a SCRIPT, not both")
    if not run_test and script is None:
        _run_driver(current, script=None, interactive=True)
        return
    sys.exit(_run_driver(current, script=script))


@cli.command()
@project_option
@click.argument("nodes", nargs=-1)
def connect(project_dir: str | None, nodes: tuple[str, ...]) -> None:
    """Open a shell on nodes over ssh (several nodes: one tmux pane each).

    \b
    Examples:
      nxc connect node1
      nxc connect node1 node2 node3     # tmux window, one pane per node
      nxc connect                        # every node
    """
    from nxc import session
    from nxc.tools import require_tool

    current = session.running(_project(project_dir))
    names = list(nodes) or [n.name for n in current.deployment.nodes]
    for name in names:
        try:
            current.deployment.node(name)
        except KeyError as exc:
            raise NxcError(str(exc.args[0])) from None
    require_tool("ssh")
    if len(names) == 1:
        argv = current.ssh_argv(names[0])
        os.execvp(argv[0], argv)
    tmux = require_tool("tmux")
    import shlex

    session_name = f"nxc-{current.deployment.id}"
    commands = [shlex.join(current.ssh_argv(n)) for n in names]
    subprocess.run([tmux, "new-session", "-d", "-s", session_name, commands[0]], check=True)
    for command in commands[1:]:
        subprocess.run([tmux, "split-window", "-t", session_name, command], check=True)
        subprocess.run([tmux, "select-layout", "-t", session_name, "tiled"], check=True)
    if sys.stdin.isatty() and "TMUX" not in os.environ:
        os.execvp(tmux, [tmux, "attach-session", "-t", session_name])
    click.echo(f"tmux session '{session_name}': {len(names)} panes (tmux attach -t {session_name})")


@cli.command()
@project_option
def status(project_dir: str | None) -> None:
    """Show the running deployment's nodes.

    \b
    Example:
      nxc status
    """
    from rich.console import Console
    from rich.table import Table

    from nxc import session

    project = _project(project_dir)
    current = session.running(project)
    rows = session.status(current)
    table = Table(title=f"deployment {current.deployment.id} ({current.deployment.flavour})")
    for column in ("name", "role", "ipv4", "ssh", "state"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("name", "role", "ipv4", "ssh", "state")))
    Console().print(table)


@cli.command()
@project_option
def stop(project_dir: str | None) -> None:
    """Stop every node and remove every resource the run created (idempotent).

    \b
    Example:
      nxc stop
    """
    from nxc import session

    project = _project(project_dir)
    with project.lock():
        done = session.stop(project)
    if not done:
        click.echo("nothing to stop")
    for line in done:
        click.echo(line)


@cli.command()
@project_option
def clean(project_dir: str | None) -> None:
    """Stop the run, then delete nxc's state directory and build result links.

    \b
    Example:
      nxc clean
    """
    from nxc import session

    project = _project(project_dir)
    with project.lock():
        done = session.stop(project)
    done += session.clean(project)
    for line in done:
        click.echo(line)


def _register_optional_groups() -> None:
    try:
        from nxc.netem.cli import netem
    except ImportError:
        return
    cli.add_command(netem)


_register_optional_groups()


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        _fail("interrupted", 130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except NxcError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
