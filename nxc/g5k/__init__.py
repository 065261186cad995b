"""Grid'5000 through its REST API (python-grid5000): credentials, reservation planning,
and the job life cycle (submit or reuse, attach, wait, map nodes to roles, release,
extend, status). No CLI here: the g5k flavours plug this in."""

from nxc.g5k.config import G5kConfig, load_config
from nxc.g5k.jobs import JobRef, JobState
from nxc.g5k.plan import ReservationSpec, RoleRequest, SiteJob, assign_nodes, plan
from nxc.g5k.reserve import Reservation, Reserver, Submitted, map_roles, reserve

__all__ = [
    "G5kConfig",
    "JobRef",
    "JobState",
    "Reservation",
    "ReservationSpec",
    "Reserver",
    "RoleRequest",
    "SiteJob",
    "Submitted",
    "assign_nodes",
    "load_config",
    "map_roles",
    "plan",
    "reserve",
]
