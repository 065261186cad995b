"""Transports that reach nodes over the network (see :mod:`nxc.runtime.transport`)."""
