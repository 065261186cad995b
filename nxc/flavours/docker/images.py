"""Roles' images in the daemon, made once per store path.

A manifest's ``container.image`` is a file: a ``docker-archive`` (what nixpkgs'
dockerTools builds, for ``docker load``) or a ``rootfs`` tarball (the selftest image,
for ``docker import``). Either way the image ends up tagged ``nxc-image:<key>``, the
key derived from the file's path: a store path never changes content, so finding that
tag means there is nothing to load. An import also carries the path as the label
``nxc.store-path``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nxc.errors import NxcError, StartError

__all__ = ["REPOSITORY", "ImageSpec", "ensure_image", "has_image", "image_ref"]

REPOSITORY = "nxc-image"
STORE_LABEL = "nxc.store-path"


@dataclass(frozen=True)
class ImageSpec:
    """A role's ``container`` entry, checked."""

    path: Path
    format: str  # "docker-archive" | "rootfs"
    init: str | None = None
    stop_signal: str | None = None
    tag: str | None = None  # the name:tag a docker-archive carries

    @classmethod
    def from_manifest(cls, role: str, entry: dict[str, Any] | None, base: Path | None) -> ImageSpec:
        if not entry or not entry.get("image"):
            raise NxcError(
                f"role {role}: the manifest has no container image "
                "(build the docker flavour: nxc build -f docker)"
            )
        path = Path(entry["image"])
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise NxcError(f"role {role}: container image {path} does not exist")
        kind = entry.get("format", "docker-archive")
        if kind == "rootfs" and not entry.get("init"):
            raise NxcError(f"role {role}: a rootfs container image needs `init` (its command)")
        return cls(path, kind, entry.get("init"), entry.get("stop_signal"), entry.get("tag"))


def image_ref(spec: ImageSpec) -> str:
    """``nxc-image:<key>``: the same file always gives the same reference."""
    key = hashlib.sha256(str(spec.path).encode()).hexdigest()[:40]
    return f"{REPOSITORY}:{key}"


def has_image(api: Any, ref: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        api.inspect_image(ref)
    except ImageNotFound:
        return False
    return True


def ensure_image(api: Any, spec: ImageSpec) -> tuple[str, bool]:
    """Make ``spec``'s image available; returns its reference and whether it was loaded
    now (False: the daemon had it from an earlier start)."""
    from docker.errors import APIError

    ref = image_ref(spec)
    if has_image(api, ref):
        return ref, False
    repository, tag = ref.split(":")
    try:
        if spec.format == "rootfs":
            # (import takes no STOPSIGNAL: the container gets it when it is created)
            changes = [
                f"LABEL {STORE_LABEL}={json.dumps(str(spec.path))}",
                f"CMD {json.dumps([spec.init])}",
            ]
            api.import_image_from_file(
                str(spec.path), repository=repository, tag=tag, changes=changes
            )
        else:
            loaded = _load(api, spec)
            api.tag(loaded, repository, tag)
    except APIError as exc:
        verb = "import" if spec.format == "rootfs" else "load"
        raise StartError(f"docker {verb} of {spec.path} failed: {exc.explanation or exc}") from None
    except OSError as exc:
        raise StartError(f"cannot read {spec.path}: {exc.strerror}") from None
    if not has_image(api, ref):
        raise StartError(f"docker did not keep the image of {spec.path} (no {ref} after loading)")
    return ref, True


def _load(api: Any, spec: ImageSpec) -> str:
    """``docker load`` the archive (streamed from the file); the image's reference."""
    loaded: list[str] = []
    with open(spec.path, "rb") as archive:
        for answer in api.load_image(archive):
            if not isinstance(answer, dict):
                continue
            if answer.get("error"):
                raise StartError(f"docker load of {spec.path} failed: {answer['error']}")
            # The daemon's JSON answer names what it loaded ("Loaded image: NAME:TAG"
            # or "Loaded image ID: sha256:…").
            text = str(answer.get("stream", ""))
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if text.startswith(prefix):
                    loaded.append(text[len(prefix) :].strip())
    if spec.tag and spec.tag not in loaded:
        loaded.insert(0, spec.tag)
    if not loaded:
        raise StartError(f"docker load of {spec.path} loaded no image")
    return loaded[0]
