"""``python -m nxc.testbeds.g5k_double``: serve the double until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import click

from nxc.errors import NxcError
from nxc.testbeds.g5k_double.backend import Backend
from nxc.testbeds.g5k_double.binding import load_bindings
from nxc.testbeds.g5k_double.clock import Timings
from nxc.testbeds.g5k_double.control import TOKEN_HEADER
from nxc.testbeds.g5k_double.inventory import default_inventory, load_inventory
from nxc.testbeds.g5k_double.server import HttpService


class UsageError(NxcError):
    pass


def parse_users(pairs: tuple[str, ...], users_file: Path | None) -> dict[str, str]:
    lines = list(pairs)
    if users_file is not None:
        try:
            lines += [line.strip() for line in users_file.read_text().splitlines()]
        except OSError as exc:
            raise UsageError(f"{users_file}: cannot read ({exc.strerror})") from None
    users = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user:
            raise UsageError(f"users are given as USER:PASSWORD, got {user or line!r}")
        users[user] = password
    if not users:
        raise UsageError("give at least one user (--users alice:secret or --users-file)")
    return users


def parse_timings(text: str | None) -> Timings:
    timings = Timings()
    if text:
        values: dict[str, object] = {}
        for item in text.split(","):
            key, _, value = item.partition("=")
            try:
                values[key.strip()] = float(value)
            except ValueError:
                raise UsageError(f"--timings: {item!r} is not NAME=SECONDS") from None
        try:
            timings.update(values)
        except ValueError as exc:
            raise UsageError(f"--timings: {exc}") from None
    return timings


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--port", type=int, default=18085, show_default=True, help="0 picks a free port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback only.")
@click.option("--users", "pairs", multiple=True, metavar="USER:PASSWORD", help="Repeatable.")
@click.option("--users-file", type=click.Path(path_type=Path), help="USER:PASSWORD lines.")
@click.option("--inventory", type=click.Path(path_type=Path), help="Sites/clusters YAML or JSON.")
@click.option(
    "--bind-ssh-config",
    type=click.Path(path_type=Path),
    help="OpenSSH-style config mapping node FQDNs to real ssh endpoints.",
)
@click.option("--timings", help="e.g. schedule_s=1,launch_s=1,finish_s=1,deploy_s=5")
@click.option("--control-token", help="Token of the /_control path (default: random, printed).")
def main(
    port: int,
    host: str,
    pairs: tuple[str, ...],
    users_file: Path | None,
    inventory: Path | None,
    bind_ssh_config: Path | None,
    timings: str | None,
    control_token: str | None,
) -> None:
    """Serve a Grid'5000 REST API double on 127.0.0.1 (python-grid5000 talks to it)."""
    import secrets

    try:
        users = parse_users(pairs, users_file)
        inv = load_inventory(inventory) if inventory else default_inventory()
        bindings = load_bindings(bind_ssh_config, inv) if bind_ssh_config else {}
        backend = Backend(inv, users, timings=parse_timings(timings), bindings=bindings)
        token = control_token or secrets.token_urlsafe(16)
        service = HttpService(backend, host, port, token)
    except (NxcError, OSError) as exc:
        click.echo(f"g5k-double: error: {exc}", err=True)
        sys.exit(1)
    bound_host, bound_port = service.address
    click.echo(f"g5k-double: serving http://{bound_host}:{bound_port}/stable", nl=True)
    click.echo(f"g5k-double: users: {', '.join(sorted(users))}; nodes bound: {len(bindings)}")
    click.echo(f"g5k-double: control path /_control with header {TOKEN_HEADER}: {token}")
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, _stop)
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()


if __name__ == "__main__":
    main()
