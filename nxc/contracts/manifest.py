"""The build manifest (``nxc_manifest: 1``): what a build produced, per role."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nxc.contracts.validate import load_document, validate_document
from nxc.errors import ContractError


@dataclass(frozen=True)
class RoleBuild:
    name: str
    quantity: int
    kernel: Path | None = None
    initrd: Path | None = None
    kernel_params: str = ""
    memory_mb: int | None = None
    cpus: int | None = None
    image: dict[str, Any] | None = None
    container: dict[str, Any] | None = None
    # Conditions on the sync service before the role's startup/services start:
    # [{"state": S, "count": N | ROLE | "all", "timeout": seconds?}] (docs/sync.md).
    start_after: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Manifest:
    composition: str
    flavour: str
    roles: dict[str, RoleBuild]
    source: Path | None = None
    image_kind: str = "nixos"
    reproducible: bool = True
    test_script: str | None = None
    topology: dict[str, Any] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    flavour_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        return cls.from_dict(load_document(path, "manifest"), path)

    @classmethod
    def from_dict(cls, document: dict[str, Any], source: Path | None = None) -> Manifest:
        validate_document(document, "manifest", str(source or "manifest"))
        base = source.parent if source else Path.cwd()

        def artifact(value: str | None) -> Path | None:
            # Relative artifact paths are relative to the manifest's directory.
            return None if value is None else (base / value)

        roles = {}
        for name, spec in document["roles"].items():
            resources = spec.get("resources", {})
            roles[name] = RoleBuild(
                name=name,
                quantity=spec["quantity"],
                kernel=artifact(spec.get("kernel")),
                initrd=artifact(spec.get("initrd")),
                kernel_params=spec.get("kernel_params", ""),
                memory_mb=resources.get("memory_mb"),
                cpus=resources.get("cpus"),
                image=spec.get("image"),
                container=spec.get("container"),
                start_after=tuple(spec.get("start_after", ())),
            )
        return cls(
            composition=document["composition"],
            flavour=document["flavour"],
            roles=roles,
            source=source,
            image_kind=document.get("image_kind", "nixos"),
            reproducible=document.get("reproducible", True),
            test_script=document.get("test_script"),
            topology=document.get("topology"),
            parameters=document.get("parameters", {}),
            flavour_options=document.get("flavour_options", {}),
            raw=document,
        )

    def require_boot_artifacts(self) -> None:
        """Check that every role has a kernel and initrd that exist (ramdisk flavours)."""
        where = self.source or "manifest"
        for role in self.roles.values():
            for kind, path in (("kernel", role.kernel), ("initrd", role.initrd)):
                if path is None:
                    raise ContractError(f"{where}: roles.{role.name}.{kind} is missing")
                if not path.is_file():
                    raise ContractError(f"{where}: roles.{role.name}.{kind}: {path} does not exist")
