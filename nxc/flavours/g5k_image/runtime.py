"""g5k-image (work in progress in this branch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from nxc.contracts import Deployment, Manifest
from nxc.errors import StartError
from nxc.flavours.g5k_common.options import IMAGE_OPTIONS, RESERVATION_OPTIONS
from nxc.flavours.g5k_common.runtime import G5kRuntimeBase
from nxc.flavours.g5k_common.settings import G5kSettings
from nxc.flavours.g5k_common.stdenv import NodeFacts
from nxc.runtime.contract import RuntimeContext
from nxc.runtime.options import Option


class G5kImageRuntime(G5kRuntimeBase):
    name: ClassVar[str] = "g5k-image"
    summary: ClassVar[str] = "Grid'5000 nodes deployed with each role's image (Kadeploy)"
    options: ClassVar[tuple[Option, ...]] = RESERVATION_OPTIONS + IMAGE_OPTIONS
    job_types: ClassVar[tuple[str, ...]] = ("deploy",)

    def check_artifacts(self, manifest: Manifest) -> None:
        pass

    def prepare_nodes(
        self,
        ctx: RuntimeContext,
        deployment: Deployment,
        fqdns: Mapping[str, str],
        settings: G5kSettings,
    ) -> tuple[dict[str, NodeFacts], dict[str, str]]:
        raise StartError("g5k-image: not yet")
