"""The sync service: barriers, signals, publish/subscribe and discovery for one deployment.

See docs/sync.md. :mod:`nxc.sync.client` is the Python client (also usable on nodes),
:mod:`nxc.sync.service` starts a deployment's server, ``nxc/agent/nxc-sync`` is the
node-side command.
"""
