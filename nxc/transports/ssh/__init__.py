"""The ssh transport: asyncssh connections to many nodes, driven synchronously.

* :class:`SshTransport`: one node (the driver's Transport: ``run``/``put``/``get``);
* :class:`SshFleet`: many nodes, with the fan-out API (``run``/``connect``/``put``/
  ``get`` on all at once, per-node outcomes);
* :class:`SshNodeControl`: the NodeControl that lets the driver's ``Machine`` use it;
* :class:`SshSettings` / :class:`SshEndpoint`: known_hosts, OpenSSH config files,
  timeouts; :func:`resolve` shows where a name goes once the config is applied.

How it works: ``docs/ssh.md``.
"""

from nxc.transports.ssh.control import PowerHooks, SshNodeControl, SshNodeUnsupported
from nxc.transports.ssh.errors import (
    HostKeyRejected,
    SshConfigError,
    SshConnectError,
    SshError,
    SshFileError,
)
from nxc.transports.ssh.fanout import FanoutFailed, FanoutResult, NodeOutcome, SshFleet
from nxc.transports.ssh.settings import (
    ResolvedEndpoint,
    SshEndpoint,
    SshSettings,
    deployment_endpoints,
    resolve,
)
from nxc.transports.ssh.transport import SshTransport

__all__ = [
    "FanoutFailed",
    "FanoutResult",
    "HostKeyRejected",
    "NodeOutcome",
    "PowerHooks",
    "ResolvedEndpoint",
    "SshConfigError",
    "SshConnectError",
    "SshEndpoint",
    "SshError",
    "SshFileError",
    "SshFleet",
    "SshNodeControl",
    "SshNodeUnsupported",
    "SshSettings",
    "SshTransport",
    "deployment_endpoints",
    "resolve",
]
