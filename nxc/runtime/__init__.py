"""The contract between nxc and every flavour's runtime (neutral: no flavour imports it back).

``transport`` is how the driver reaches a node; the node handle, runtime phases,
options and the flavour registry live next to it.
"""
