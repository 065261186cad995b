"""``nxc g5k``: Grid'5000 helpers; ``nxc g5k rehearsal up|down|env|status``."""

from __future__ import annotations

from pathlib import Path

import click

from nxc.errors import NxcError


@click.group()
def g5k() -> None:
    """Grid'5000 helpers (the rehearsal testbed)."""


@g5k.group()
def rehearsal() -> None:
    """Rehearse a Grid'5000 run on local VMs standing in for reserved nodes.

    \b
    Example:
      nxc g5k rehearsal up --nodes 3 --config-dir ~/rehearsal
      eval "$(nxc g5k rehearsal env --config-dir ~/rehearsal)"
      nxc build -f g5k-ramdisk && nxc start -f g5k-ramdisk
      nxc g5k rehearsal down --config-dir ~/rehearsal
    """


config_dir_option = click.option(
    "--config-dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory holding the testbed's configs, keys, logs and ledger.",
)


@rehearsal.command()
@config_dir_option
@click.option("--nodes", default=3, show_default=True, help="Number of nodes (VMs).")
@click.option("--memory", default=384, show_default=True, help="MiB of memory per node.")
@click.option("--user", default="alice", show_default=True, help="The Grid'5000 login.")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto")
@click.option(
    "--shared-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="A directory the nodes mount at the same path (stands for the NFS home).",
)
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for it.")
def up(
    config_dir: Path,
    nodes: int,
    memory: int,
    user: str,
    accel: str,
    shared_dir: Path | None,
    timeout: float,
) -> None:
    """Start the nodes and the API double; write the configs that point nxc at them."""
    from nxc.testbeds.rehearsal.testbed import UpRequest
    from nxc.testbeds.rehearsal.testbed import up as bring_up

    if shared_dir is not None and not shared_dir.is_dir():
        raise NxcError(f"--shared-dir {shared_dir}: not a directory")
    request = UpRequest(nodes, memory, user, accel, shared_dir, timeout)
    ready = bring_up(config_dir, request, lambda line: click.echo(f"  {line}", err=True))
    click.echo(f"rehearsal testbed up: API {ready['api']}, {nodes} nodes")
    nodes_ready = ready.get("nodes")
    for fqdn in nodes_ready if isinstance(nodes_ready, dict) else {}:
        click.echo(f"  {fqdn}")
    click.echo(f'use it: eval "$(nxc g5k rehearsal env --config-dir {config_dir})"')


@rehearsal.command()
@config_dir_option
def down(config_dir: Path) -> None:
    """Stop the nodes and the double; remove everything `up` created."""
    from nxc.testbeds.rehearsal.testbed import down as tear_down

    report = tear_down(config_dir, lambda line: None)
    lines = report.lines()
    for line in lines or ["nothing to tear down"]:
        click.echo(line)
    if not report.ok:
        raise NxcError("some resources could not be released (listed above); run down again")


@rehearsal.command()
@config_dir_option
def env(config_dir: Path) -> None:
    """Print the export lines that point nxc (and python-grid5000) at the testbed."""
    from nxc.testbeds.rehearsal.testbed import exports

    click.echo(exports(config_dir), nl=False)


@rehearsal.command()
@config_dir_option
def status(config_dir: Path) -> None:
    """Show the testbed's API URL, nodes and live processes."""
    import json

    from nxc.testbeds.rehearsal.testbed import status as show

    click.echo(json.dumps(show(config_dir), indent=2))
