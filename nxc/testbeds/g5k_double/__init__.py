"""A faithful stand-in for the Grid'5000 REST API (reference tree, OAR jobs, Kadeploy
deployments) served on 127.0.0.1, for tests and offline rehearsals.

Start it with ``python -m nxc.testbeds.g5k_double --port 18085 --users alice:secret``
or in process with ``G5kDouble``; see docs/g5k.md.
"""

from nxc.testbeds.g5k_double.binding import SshEndpoint, load_bindings, parse_bindings
from nxc.testbeds.g5k_double.clock import Clock, Timings
from nxc.testbeds.g5k_double.deployments import Deployer, DeployRequest
from nxc.testbeds.g5k_double.double import G5kDouble
from nxc.testbeds.g5k_double.inventory import Inventory, default_inventory, load_inventory

__all__ = [
    "Clock",
    "DeployRequest",
    "Deployer",
    "G5kDouble",
    "Inventory",
    "SshEndpoint",
    "Timings",
    "default_inventory",
    "load_bindings",
    "load_inventory",
    "parse_bindings",
]
