"""The ``nxc`` command line: a thin layer over the modules a script can import too."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from nxc import __version__
from nxc.errors import NxcError
from nxc.monitor.cli import monitor_options, monitor_settings


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
    from nxc.runtime import registry
    from nxc.session import DEFAULT_FLAVOUR

    project = _project(project_dir)
    plan = buildopts.plan(
        project.root,
        known_flavours=registry.buildable_names(),
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
        click.echo(f"flavours nxc can start: {', '.join(registry.names()) or 'none'}", err=True)
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
    from nxc.runs import argv

    # The command goes with the build: run records say how their images were built.
    project.record_build(manifest.flavour, {**result.to_record(), "command": argv()})
    click.echo(f"built {output}: {result.out_path}")
    for role in manifest.roles.values():
        click.echo(f"  role {role.name}: {role.quantity} node(s) by default")


class _FlavourOptionsCommand(click.Command):
    """A command that also takes every registered flavour's options, each shown
    under its flavour's heading in ``--help``."""

    def _flavour_params(self) -> list[tuple[str, str, list[click.Option]]]:
        cached: list[tuple[str, str, list[click.Option]]] | None = getattr(
            self, "_nxc_flavour_params", None
        )
        if cached is not None:
            return cached
        from nxc.runtime import registry

        sections = []
        made: dict[str, click.Option] = {}
        taken = {flag for param in self.params for flag in getattr(param, "opts", [])}
        for name in registry.names():
            try:
                runtime = registry.load(name)
            except NxcError:
                continue  # reported when someone starts it
            options = []
            for spec in runtime.options:
                if spec.flag in taken:
                    raise NxcError(
                        f"flavour {name} declares {spec.flag}, which nxc {self.name} "
                        "already has: rename that option"
                    )
                if spec.name not in made and spec.type == "bool" and not spec.per_role:
                    # A yes/no option is a flag: --keep-job (the composition may say false).
                    made[spec.name] = click.Option(
                        [spec.flag, _param_name(spec.name)],
                        is_flag=True,
                        flag_value=True,
                        default=None,
                        help=spec.help,
                    )
                elif spec.name not in made:
                    made[spec.name] = click.Option(
                        [spec.flag, _param_name(spec.name)],
                        multiple=spec.per_role or spec.multiple,
                        metavar=spec.shown_metavar(),
                        help=spec.help,
                        default=None,
                    )
                options.append(made[spec.name])
            sections.append((name, runtime.summary, options))
        self._nxc_flavour_params = sections
        return sections

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        known = {p.name for p in params}
        for _name, _summary, options in self._flavour_params():
            for option in options:
                if option.name not in known:
                    params.insert(len(params) - 1, option)  # before --help
                    known.add(option.name)
        return params

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        flavour_names = {o.name for _n, _s, opts in self._flavour_params() for o in opts}
        general = [
            record
            for p in super().get_params(ctx)
            if p.name not in flavour_names and (record := p.get_help_record(ctx))
        ]
        with formatter.section("Options"):
            formatter.write_dl(general)
        for name, summary, options in self._flavour_params():
            records = [r for o in options if (r := o.get_help_record(ctx))]
            if records:
                with formatter.section(f"Options of flavour {name} ({summary})"):
                    formatter.write_dl(records)


def _flavour_values(ctx: click.Context, flavour: str) -> dict[str, Any]:
    """The flavour options given on the command line, checked against ``flavour``."""
    from nxc.runtime import registry

    command = ctx.command
    assert isinstance(command, _FlavourOptionsCommand)
    owners: dict[str, list[str]] = {}
    for name, _summary, options in command._flavour_params():
        for option in options:
            owners.setdefault(str(option.opts[0]).removeprefix("--"), []).append(name)
    runtime = registry.load(flavour)
    mine = {o.name for o in runtime.options}
    values: dict[str, Any] = {}
    for key, owned_by in owners.items():
        value = ctx.params.get(_param_name(key))
        if value in (None, (), []):
            continue
        if key not in mine:
            raise NxcError(
                f"--{key} is an option of flavour {', '.join(owned_by)}, not of {runtime.name}"
            )
        values[key] = value
    return values


def _param_name(option: str) -> str:
    # Flavour options get their own parameter namespace: they never clash with the
    # command's own parameters (a flavour may well declare --timeout).
    return "flavour_option_" + option.replace("-", "_")


@cli.command(cls=_FlavourOptionsCommand)
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
@click.option(
    "--global-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Fail the scenario if it runs longer (NixOS's globalTimeout; default: none).",
)
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for readiness.")
@click.option(
    "--netem",
    "netem_file",
    type=click.Path(path_type=Path),
    help="Apply this network topology (YAML) once ready.",
)
@click.option(
    "--no-netem", is_flag=True, help="Do not apply the composition's own topology at start."
)
@monitor_options
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Redeploy only the nodes the last start reported failed (the others stay up).",
)
@click.pass_context
def start(
    ctx: click.Context,
    /,
    project_dir: str | None,
    flavour: str | None,
    manifest_path: Path | None,
    roles: tuple[str, ...],
    run_test: bool,
    interactive: bool,
    global_timeout: float | None,
    timeout: float,
    netem_file: Path | None,
    no_netem: bool,
    no_monitor: bool,
    monitor_interval: float,
    retry_failed: bool,
    **_flavour_options: Any,
) -> None:
    """Start the built composition and wait until every node is ready.

    \b
    Examples:
      nxc start -r node=3              # 3 nodes of role 'node'
      nxc start -r server=1 -r client=4 -t
      nxc start --memory 512 --cpus server=2 -I
      nxc start -t --monitor-interval 0.5   # scrape metrics twice a second
      nxc start -f g5k-ramdisk --site rennes --cluster paravance --walltime 2:00
      nxc start --retry-failed         # after a partial failure: redeploy the failed nodes
    """
    from nxc import session
    from nxc.expand import parse_role_overrides

    monitor = monitor_settings(no_monitor, monitor_interval)
    project = _project(project_dir)
    if retry_failed:
        if roles or manifest_path is not None or flavour is not None:
            raise NxcError("--retry-failed redeploys the running deployment: no -r, -m or -f")
        from nxc.running import running

        deployment = running(project).deployment
        request = session.StartRequest(
            options=_flavour_values(ctx, deployment.flavour),
            ready_timeout=timeout,
            topology=netem_file,
            composition_topology=not no_netem,
        )
        with project.lock(), _status(f"redeploying failed nodes of {deployment.id}") as up:
            current = session.retry_failed(project, request, progress=up)
        manifest = current.manifest
    else:
        manifest = session.manifest_for(project, flavour, manifest_path)
        request = session.StartRequest(
            overrides=parse_role_overrides(roles),
            options=_flavour_values(ctx, manifest.flavour),
            ready_timeout=timeout,
            topology=netem_file,
            composition_topology=not no_netem,
        )
        with project.lock(), _status(f"starting {manifest.composition} ({manifest.flavour})") as up:
            current = session.start(project, manifest, request, progress=up)
    nodes = current.deployment.nodes
    click.echo(f"{len(nodes)} nodes ready: {' '.join(n.name for n in nodes)}")
    if netem_file is not None or (manifest.topology and not no_netem):
        click.echo("network topology applied (nxc netem show)")
    if run_test:
        sys.exit(_run_driver(current, script=None, monitor=monitor, global_timeout=global_timeout))
    if interactive:
        _run_driver(current, script=None, interactive=True, monitor=monitor)


def _run_driver(
    current: Any,
    script: Path | None,
    interactive: bool = False,
    monitor: Any = None,
    faults: Path | None = None,
    timeline_only: bool = False,
    global_timeout: float | None = None,
) -> int:
    """Run SCRIPT, else the composition's testScript, else (interactive) the shell.

    ``faults``: a fault timeline run alongside (alone with ``timeline_only``); what it
    left applied is healed when the driver ends.
    """
    from nxc.driver.session import open_driver
    from nxc.faults.timeline import Timeline

    timeline = Timeline.load(faults) if faults is not None else None
    with open_driver(current, monitor=monitor) as driver:
        injector = driver.extra_globals["faults"]
        if timeline is not None and timeline_only:
            from nxc.faults.timeline import TimelineRun

            TimelineRun(timeline, injector).run()
            click.echo(f"fault timeline done: {current.run.directory / 'faults.jsonl'}", err=True)
            return 0
        if timeline is not None:
            injector.timeline(timeline)
        if interactive:
            from nxc.driver.shell import interactive_shell

            interactive_shell(driver, history=current.project.state_dir / "shell-history")
            return 0
        if script is not None:
            from nxc.fsutil import read_text

            text = read_text(script, "script")
            name = str(script)
        else:
            text = current.manifest.test_script or ""
            if not text.strip():
                composition = current.manifest.composition
                raise NxcError(f"the composition '{composition}' has no testScript")
            name = "testScript"
        current.run.save_scenario(driver.out_dir, text)
        ok = driver.run_script(text, name, global_timeout=global_timeout)
        click.echo(f"report: {driver.out_dir / 'report.json'} and report.xml", err=True)
        return 0 if ok else 1


@cli.command()
@project_option
@click.option("-t", "--test", "run_test", is_flag=True, help="Run the composition's testScript.")
@click.option(
    "--faults",
    "faults_file",
    type=click.Path(path_type=Path),
    help="Run this fault timeline (YAML) alongside the scenario, or alone without one.",
)
@click.option(
    "--global-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Fail the scenario if it runs longer (NixOS's globalTimeout; default: none).",
)
@click.argument("script", required=False, type=click.Path(path_type=Path))
@monitor_options
def driver(
    project_dir: str | None,
    run_test: bool,
    faults_file: Path | None,
    global_timeout: float | None,
    script: Path | None,
    no_monitor: bool,
    monitor_interval: float,
) -> None:
    """Drive the running nodes: a shell, the testScript (-t) or a SCRIPT file.

    Script mode exits non-zero when the scenario fails and writes report.json and
    report.xml (JUnit) in the run's directory. Every fault and heal goes to the run
    record (faults.jsonl); faults still applied at the end are healed.

    \b
    Examples:
      nxc driver                 # ptpython shell, every node bound by name
      nxc driver -t              # the composition's testScript
      nxc driver scenario.py
      nxc driver -t --no-monitor # without scraping metrics
      nxc driver --faults faults.yaml -t   # the testScript under a fault timeline
      nxc driver --faults faults.yaml      # the timeline alone
      nxc driver -t --global-timeout 600   # fail the testScript after 10 minutes
    """
    from nxc.running import running

    monitor = monitor_settings(no_monitor, monitor_interval)
    current = running(_project(project_dir))
    if run_test and script is not None:
        raise NxcError("give either -t or a SCRIPT, not both")
    if faults_file is not None and not run_test and script is None:
        sys.exit(
            _run_driver(current, None, monitor=monitor, faults=faults_file, timeline_only=True)
        )
    if not run_test and script is None:
        _run_driver(current, script=None, interactive=True, monitor=monitor)
        return
    sys.exit(
        _run_driver(
            current,
            script=script,
            monitor=monitor,
            faults=faults_file,
            global_timeout=global_timeout,
        )
    )


@cli.command()
@project_option
@click.argument("nodes", nargs=-1)
def connect(project_dir: str | None, nodes: tuple[str, ...]) -> None:
    """Open a shell on nodes: ssh, or docker exec where a node has no ssh endpoint
    (several nodes: one tmux pane each).

    \b
    Examples:
      nxc connect node1
      nxc connect node1 node2 node3     # tmux window, one pane per node
      nxc connect                        # every node
    """
    from nxc.connect import connect as open_shells
    from nxc.running import running

    message = open_shells(running(_project(project_dir)), nodes)
    if message:
        click.echo(message)


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
    from nxc.expand import role_aliases
    from nxc.running import running

    current = running(_project(project_dir))
    rows = session.status(current)
    facts = current.runtime.status(current.project, current.deployment)
    title = f"deployment {current.deployment.id} ({current.deployment.flavour})"
    if facts:
        title += " " + ", ".join(f"{k}: {v}" for k, v in facts.items())
    table = Table(title=title)
    columns = ("name", "role", "ipv4", "ssh", "state", "boot_id")
    for column in columns:
        table.add_column(column)
    # a role with one node is also reachable by its name (driver, /etc/hosts, connect)
    aliases = {
        name: alias
        for alias, name in role_aliases((str(r["name"]), str(r["role"])) for r in rows).items()
    }
    for row in rows:
        cells = [str(row[c]) for c in columns]
        if row["name"] in aliases:
            cells[0] += f" ({aliases[str(row['name'])]})"
        table.add_row(*cells)
    Console().print(table)
    problems = current.health()
    for problem in problems:
        click.secho(f"problem: {problem}", fg="red", err=True)
    if problems:
        sys.exit(1)


@cli.command()
@project_option
@click.option(
    "--keep-job",
    is_flag=True,
    help="Keep the Grid'5000 OAR job(s) reserved (the next start reuses them by name).",
)
def stop(project_dir: str | None, keep_job: bool) -> None:
    """Stop every node and remove every resource the run created (idempotent).

    \b
    Examples:
      nxc stop
      nxc stop --keep-job        # Grid'5000: keep the reservation for the next start
    """
    from nxc import session

    project = _project(project_dir)
    keep = frozenset({"g5k-job", "g5k-job-name"}) if keep_job else frozenset()
    with project.lock(wait=30):
        report = session.stop(project, keep=keep)
    lines = report.lines()
    if not lines:
        click.echo("nothing to stop")
    for line in lines:
        click.echo(line)
    if not report.ok:
        raise NxcError(
            f"{len(report.failed)} resource(s) could not be released (listed above); "
            "'nxc stop' again retries them"
        )


@cli.command()
@project_option
@click.argument("amount", metavar="+H[:MM[:SS]]")
def extend(project_dir: str | None, amount: str) -> None:
    """Ask for more time for the running deployment's reservation (Grid'5000 walltime).

    \b
    Example:
      nxc extend +1:00           # one more hour for every OAR job of the deployment
    """
    from nxc.running import running

    current = running(_project(project_dir))
    for line in current.runtime.extend(current.project, current.deployment, amount):
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
    with project.lock(wait=30):
        done = session.clean(project)
    for line in done:
        click.echo(line)


def _register_records() -> None:
    from nxc.records.cli import publish_cmd, reproduce_cmd, runs_cmd, verify_cmd

    for command in (runs_cmd, publish_cmd, verify_cmd, reproduce_cmd):
        cli.add_command(command)


_register_records()


def _register_monitoring() -> None:
    from nxc.monitor.cli import monitor_cmd, report_cmd

    cli.add_command(monitor_cmd)
    cli.add_command(report_cmd)


_register_monitoring()


def _register_optional_groups() -> None:
    from nxc.testbeds.rehearsal.cli import g5k

    cli.add_command(g5k)
    try:
        from nxc.netem.cli import netem
    except ImportError:
        return
    cli.add_command(netem)


_register_optional_groups()


def _interrupted(exc: KeyboardInterrupt) -> NoReturn:
    from nxc import signals

    name = f" ({exc.args[0]})" if isinstance(exc, signals.Terminated) else ""
    _fail(f"interrupted{name}: everything started was stopped", signals.exit_code(exc))


def main() -> None:
    from nxc import signals

    signals.install()
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns KeyboardInterrupt (and our Terminated) into Abort.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, KeyboardInterrupt):
            _interrupted(cause)
        _fail("interrupted", 130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except NxcError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt as exc:
        _interrupted(exc)
    except BrokenPipeError:
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
