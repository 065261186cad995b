"""``nxc netem``: apply, show, validate and reset network emulation on a running deployment.

The group needs the running session: the deployment, one driver machine per node (anything
with ``execute(cmd, timeout=...)``), the manifest's topology and the project state dir. By
default it finds them itself, like the other commands (``-p DIR`` or the nearest project,
then :func:`nxc.session.running`). A caller can hand its own through click's context
object instead (tests, other front ends)::

    from nxc.netem.cli import NetemSession, netem

    def get_session() -> NetemSession:
        return NetemSession(deployment, machines, manifest_topology, state_dir)

    ctx.obj = get_session   # or an object with a ``netem_session`` attribute, or a dict
                            # with a "netem_session" key, holding such a function

``topology`` is the manifest's topology (for ``--from-manifest``; None if it has none) and
``state_dir`` (optional) is where ``apply`` records the topology it installed, so that later
``show``/``validate`` know what was asked (see :mod:`nxc.netem.state`). Errors are
:class:`nxc.errors.NxcError` (one line; the main entry point prints them and exits non-zero).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from nxc.errors import NxcError
from nxc.netem.apply import Netem
from nxc.netem.model import Topology
from nxc.netem.state import NetemSession, apply_topology, session_from_running
from nxc.netem.tcgen import GenOptions
from nxc.netem.validate import Tolerances

SessionGetter = Callable[[], NetemSession]
__all__ = ["NetemSession", "SessionGetter", "netem"]


def _default_session(project_dir: str | None) -> NetemSession:
    from nxc.project import Project
    from nxc.running import running

    project = Project.find(Path(project_dir) if project_dir else None)
    return session_from_running(running(project))


def _session(ctx: click.Context) -> NetemSession:
    obj: Any = ctx.obj
    getter: Any = None
    if isinstance(obj, Mapping):
        getter = obj.get("netem_session")
    elif obj is not None and hasattr(obj, "netem_session"):
        getter = obj.netem_session
    elif callable(obj):
        getter = obj
    if getter is None:
        return _default_session(ctx.meta.get("nxc_netem_project"))
    session = getter() if callable(getter) else getter
    if isinstance(session, tuple):  # (deployment, machines, topology) is accepted too
        session = NetemSession(*session)
    if not isinstance(session, NetemSession):
        raise NxcError("nxc netem: the session getter returned something unexpected")
    return session


def _netem(session: NetemSession, topology: Topology, leaf: str) -> Netem:
    return Netem(session.deployment, session.machines, topology, options=GenOptions(leaf=leaf))


_leaf_option = click.option(
    "--leaf",
    default="netem",
    show_default=True,
    hidden=True,
    help="Leaf qdisc kind (a substitute such as pfifo for kernels without netem; tests only).",
)


@click.group("netem")
@click.option(
    "-p",
    "--project",
    "project_dir",
    metavar="DIR",
    help="Composition directory (default: nearest directory with a flake.nix).",
)
@click.pass_context
def netem(ctx: click.Context, project_dir: str | None) -> None:
    """Network emulation between the nodes: delay, loss, rate, partitions."""
    ctx.meta["nxc_netem_project"] = project_dir


@netem.command("apply")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--from-manifest", is_flag=True, help="Use the topology of the build manifest.")
@click.option("--dry-run", is_flag=True, help="Print each node's tc batch; change nothing.")
@_leaf_option
@click.pass_context
def apply_cmd(
    ctx: click.Context, file: Path | None, from_manifest: bool, dry_run: bool, leaf: str
) -> None:
    """Install the topology FILE (YAML) on every node, replacing nxc's previous one."""
    if (file is None) == (not from_manifest):
        raise click.UsageError("give a topology FILE or --from-manifest (one of them)")
    session = _session(ctx)
    if file is not None:
        topology = Topology.load(file)
    else:
        if session.topology is None:
            raise NxcError("nxc netem apply --from-manifest: the manifest has no topology")
        topology = session.topology
    if dry_run:
        net = _netem(session, topology, leaf)
        for name, script in net.scripts().items():
            click.echo(f"# {name}")
            for line in script.ip_before:
                click.echo(f"# ip: {line}")
            click.echo(script.tc_batch, nl=False)
            for line in script.ip_after:
                click.echo(f"# ip: {line}")
        return
    net = apply_topology(session, topology, GenOptions(leaf=leaf))
    shaped = len(net.pairs())
    click.echo(f"netem: applied on {len(session.deployment.nodes)} nodes ({shaped} shaped pairs)")


@netem.command("show")
@click.option("--no-state", is_flag=True, help="Only the topology, not each node's tc state.")
@click.pass_context
def show_cmd(ctx: click.Context, no_state: bool) -> None:
    """Show the shaped pairs and what tc has installed on each node."""
    session = _session(ctx)
    click.echo(_netem(session, session.current_topology(), "netem").show(installed=not no_state))


@netem.command("validate")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of a table.")
@click.option(
    "--report", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON report there."
)
@click.option("--rate", is_flag=True, help="Also measure rates with iperf3 (where installed).")
@click.option("--ipv6", is_flag=True, help="Probe IPv6 addresses instead of IPv4.")
@click.option("--rtt-tolerance-ms", type=float, default=Tolerances.rtt_abs_ms, show_default=True)
@click.option(
    "--loss-tolerance",
    type=float,
    default=Tolerances.loss_abs,
    show_default=True,
    help="Absolute tolerance on loss, as a fraction.",
)
@click.pass_context
def validate_cmd(
    ctx: click.Context,
    as_json: bool,
    report: Path | None,
    rate: bool,
    ipv6: bool,
    rtt_tolerance_ms: float,
    loss_tolerance: float,
) -> None:
    """Measure RTT and loss (and rate) between nodes; exit non-zero if not as asked."""
    from rich.console import Console

    session = _session(ctx)
    net = _netem(session, session.current_topology(), "netem")
    tolerances = Tolerances(rtt_abs_ms=rtt_tolerance_ms, loss_abs=loss_tolerance)
    result = net.validate(
        tolerances=tolerances,
        family="ipv6" if ipv6 else "ipv4",
        rate=rate,
        report=report,
        console=None if as_json else Console(),
        check=False,
    )
    if as_json:
        click.echo(result.to_json(), nl=False)
    if not result.ok:
        from nxc.netem.validate import NetworkMismatch

        raise NetworkMismatch(result.summary())


@netem.command("reset")
@click.pass_context
def reset_cmd(ctx: click.Context) -> None:
    """Remove nxc's qdiscs, filters and ifb devices from every node (and nothing else)."""
    session = _session(ctx)
    _netem(session, Topology(), "netem").reset()
    session.forget()
    click.echo(f"netem: reset on {len(session.deployment.nodes)} nodes")
