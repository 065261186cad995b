"""execo ``Host`` objects for nxc's ssh nodes (optional: ``pip install 'nxc[execo]'``).

For users with execo scripts: the nodes of a running deployment, or any ssh endpoints
nxc knows, as execo hosts, plus the connection parameters to use with them::

    from nxc.transports.ssh.execo import deployment_hosts
    hosts, params = deployment_hosts(running)          # nxc.session.running(project)
    execo.Remote("uname -r", hosts, connection_params=params).run()

Pass ``params`` along: execo's own defaults switch host-key checking off
(``StrictHostKeyChecking=no``, ``UserKnownHostsFile=/dev/null``); these check every
node's key against nxc's known_hosts and read nxc's ssh config, if any.

execo is imported only when a function here is called; without it, a one-line
:class:`~nxc.errors.NxcError` says how to install it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from nxc.errors import NxcError
from nxc.transports.ssh.settings import SshEndpoint, SshSettings, deployment_endpoints, resolve

if TYPE_CHECKING:
    from nxc.session import RunningDeployment


class ExecoMissing(NxcError):
    """execo is not installed (it is an optional extra)."""


def _execo() -> Any:
    try:
        import execo  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise ExecoMissing(
            "execo is not installed: pip install 'nxc[execo]' (an optional extra)"
        ) from None
    return execo


def connection_params(settings: SshSettings) -> dict[str, Any]:
    """execo ``connection_params`` that check host keys and honour ``settings.config``."""
    strict = [
        "-o", "BatchMode=yes",
        "-o", "PasswordAuthentication=no",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile=" + " ".join(str(p) for p in settings.known_hosts),
        "-o", f"ConnectTimeout={max(1, round(settings.connect_timeout))}",
    ]  # fmt: skip
    for config in settings.config or ():
        strict = ["-F", str(config), *strict]
    return {
        "ssh_options": ("-tt", *strict),
        "scp_options": (*strict, "-rp"),
        "taktuk_connector_options": tuple(strict),
    }


def execo_hosts(nodes: Iterable[SshEndpoint | str], settings: SshSettings) -> list[Any]:
    """One ``execo.Host`` per node: address, user, port and key file resolved.

    A node given by name and resolved through an ssh config keeps its name as the
    address (ssh then applies the config, ``ProxyJump`` and ``HostKeyAlias``
    included, through :func:`connection_params`); otherwise the address is the host.
    """
    execo = _execo()
    hosts = []
    for node in nodes:
        endpoint = SshEndpoint.of(node)
        where = resolve(endpoint, settings)
        through_config = endpoint.host is None and bool(settings.config)
        hosts.append(
            execo.Host(
                endpoint.name if through_config else where.host,
                user=where.user,
                port=where.port,
                keyfile=str(where.keyfiles[0]) if where.keyfiles else None,
            )
        )
    return hosts


def deployment_hosts(running: RunningDeployment) -> tuple[list[Any], dict[str, Any]]:
    """execo hosts for every node of ``running``, and the connection params to use."""
    endpoints, settings = deployment_endpoints(running)
    return execo_hosts(endpoints, settings), connection_params(settings)
