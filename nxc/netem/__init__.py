"""Network emulation: topology model, pure tc generation, apply/reset/validate on nodes.

See docs/netem.md. The driver builds ``Netem(deployment, machines, topology)``.
"""

from nxc.netem.apply import MachineLike, Netem, NetemApplyError, NetemMissing
from nxc.netem.model import Constraint, Group, PairShaping, Partition, Shaping, Topology
from nxc.netem.tcgen import ForeignQdisc, GenOptions
from nxc.netem.validate import NetworkMismatch, Tolerances, ValidationReport

__all__ = [
    "Constraint",
    "ForeignQdisc",
    "GenOptions",
    "Group",
    "MachineLike",
    "Netem",
    "NetemApplyError",
    "NetemMissing",
    "NetworkMismatch",
    "PairShaping",
    "Partition",
    "Shaping",
    "Tolerances",
    "Topology",
    "ValidationReport",
]
