"""The runtimes of nxc's own flavours, one package each (registered as ``nxc.flavours``
entry points in pyproject.toml; see :mod:`nxc.runtime.registry`)."""
