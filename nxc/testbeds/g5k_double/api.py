"""The public API: every route the double answers under ``/stable`` and ``/3.0``."""

from __future__ import annotations

from nxc.testbeds.g5k_double.oar_api import OAR
from nxc.testbeds.g5k_double.reference_api import REFERENCE
from nxc.testbeds.g5k_double.routing import Router

API = Router(REFERENCE, OAR)
