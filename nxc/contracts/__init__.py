"""Typed, versioned contracts between the build side and the run side."""

from nxc.contracts.deployment import Deployment, Node
from nxc.contracts.manifest import Manifest, RoleBuild
from nxc.contracts.validate import load_document, validate_document

__all__ = [
    "Deployment",
    "Manifest",
    "Node",
    "RoleBuild",
    "load_document",
    "validate_document",
]
