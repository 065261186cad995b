"""Publishing role images where Kadeploy fetches them: the image tarball and its
environment description (Kadeploy's YAML), over http(s).

* ``public``: copied into a directory served by a web server, on Grid'5000 the user's
  ``~/public`` (``http://public.<site>.grid5000.fr/~<user>/``), in a subdirectory
  nxc marks as its own and removes at ``nxc stop``;
* ``serve``: nxc serves them itself with a small HTTP server (``python -m
  http.server``) recorded in the ledger, stopped at ``nxc stop`` — what the
  rehearsal testbed uses (its Kadeploy runs on this machine).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from nxc.contracts import Manifest
from nxc.errors import StartError
from nxc.fsutil import atomic_write
from nxc.project import OWNED_MARK
from nxc.runtime.contract import RuntimeContext
from nxc.wait import Attempt, PollExpired, poll

BOOTSTRAP_PARAM = "nxc.bootstrap=kadeploy"


@dataclass(frozen=True)
class Published:
    base_url: str
    environments: dict[str, str]  # role -> URL of its environment description


def description(manifest: Manifest, role: str, image_url: str, console: str) -> dict[str, object]:
    """Kadeploy's environment description (kaenv YAML) of one role's image."""
    image = manifest.roles[role].image or {}
    params = " ".join(
        p for p in (str(image.get("kernel_params", "")).strip(), console, BOOTSTRAP_PARAM) if p
    )
    return {
        "name": f"nxc-{manifest.composition}-{role}",
        "version": 1,
        "description": f"nxc composition {manifest.composition}, role {role}",
        "author": "nxc",
        "visibility": "private",
        "destructive": False,
        "os": "linux",
        "arch": "x86_64",
        "image": {
            "file": image_url,
            "kind": str(image.get("kind", "tar")),
            "compression": str(image.get("compression", "gzip")),
        },
        "boot": {
            "kernel": str(image.get("kernel", "/boot/kernel")),
            "initrd": str(image.get("initrd", "/boot/initrd")),
            "kernel_params": params,
        },
        "filesystem": "ext4",
        "partition_type": 131,
        "multipart": False,
    }


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _serve(ctx: RuntimeContext, directory: Path, address: str) -> str:
    """Start an HTTP server on ``directory`` (recorded in the ledger); its URL."""
    port = _free_port(address)
    log = ctx.run_dir / "publish-http.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", address,
             "--directory", str(directory), str(port)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    ctx.ledger.record_process(process.pid, "HTTP server publishing the images")

    def listening(_remaining: float) -> Attempt[bool]:
        if process.poll() is not None:
            raise StartError(f"the HTTP server publishing the images exited (see {log})")
        try:
            with socket.create_connection((address, port), timeout=1):
                return Attempt.ok(True)
        except OSError as exc:
            return Attempt.not_yet(str(exc))

    try:
        poll("the image HTTP server to listen", listening, 15)
    except PollExpired as exc:
        raise StartError(str(exc)) from None
    return f"http://{address}:{port}"


def publish(
    ctx: RuntimeContext,
    roles: Mapping[str, object],
    *,
    mode: str,
    public_dir: Path | None,
    public_url: str | None,
    serve_address: str,
    console: str,
) -> Published:
    """Put every role's image and description where Kadeploy fetches them."""
    try:
        return _publish(
            ctx, roles, mode=mode, public_dir=public_dir, public_url=public_url,
            serve_address=serve_address, console=console,
        )  # fmt: skip
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise StartError(f"cannot publish the images{where}: {exc.strerror or exc}") from None


def _publish(
    ctx: RuntimeContext,
    roles: Mapping[str, object],
    *,
    mode: str,
    public_dir: Path | None,
    public_url: str | None,
    serve_address: str,
    console: str,
) -> Published:
    manifest = ctx.manifest
    if mode == "public":
        if public_dir is None or public_url is None:
            raise StartError("publishing in a public directory needs --public-dir and --public-url")
        target = public_dir / f"nxc-{ctx.runtime_dir.name.removeprefix('nxc-')}"
        target.mkdir(mode=0o755, parents=True)
        atomic_write(target / OWNED_MARK, str(ctx.project.state_dir) + "\n", 0o600)
        ctx.ledger.record_path(target, "published images")
        base = f"{public_url.rstrip('/')}/{target.name}"
    else:
        target = ctx.runtime_dir / "public"
        target.mkdir(mode=0o755)
        base = ""
    urls: dict[str, str] = {}
    for role in roles:
        image = manifest.roles[role].image
        if not image or not image.get("file"):
            raise StartError(f"role {role}: the build has no image (nxc build -f g5k-image)")
        source = Path(str(image["file"]))
        if not source.is_absolute() and manifest.source is not None:
            source = manifest.source.parent / source
        if not source.is_file():
            raise StartError(f"role {role}: image {source} does not exist")
        name = f"{role}.tar.gz"
        if mode == "public":
            ctx.say(f"publishing the image of role {role} in {target}")
            shutil.copyfile(source, target / name)
            os.chmod(target / name, 0o644)
        else:
            (target / name).symlink_to(source)
        urls[role] = name
    if mode != "public":
        base = _serve(ctx, target, serve_address)
    for role, name in list(urls.items()):
        document = description(manifest, role, f"{base}/{name}", console)
        env_file = target / f"{role}.yaml"
        env_file.write_text(yaml.safe_dump(document, sort_keys=False))
        env_file.chmod(0o644)
        urls[role] = f"{base}/{role}.yaml"
    return Published(base, urls)
