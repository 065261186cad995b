"""Fault injection: pure plans (:mod:`nxc.faults.plans`, :mod:`nxc.faults.patterns`),
their execution and record (:mod:`nxc.faults.injector`) and timelines
(:mod:`nxc.faults.timeline`). See docs/faults.md."""

from nxc.faults.injector import ActiveFault, Injector
from nxc.faults.plans import KINDS, Fault, FaultError, plan
from nxc.faults.timeline import Timeline, TimelineRun

__all__ = [
    "KINDS",
    "ActiveFault",
    "Fault",
    "FaultError",
    "Injector",
    "Timeline",
    "TimelineRun",
    "plan",
]
