"""What a run record gathers besides run.json: the build's inputs and store paths
(at start) and the nodes' logs (at stop).

At start, from the project's build record (``builds.json``, written by ``nxc
build``): ``flake.lock`` (the lock nix used), ``inputs.json`` (each input's locked
revision and NAR hash), ``source/`` (the flake's own files as nix copied them to
the store, which nxc already checked hold no secret) and ``store-paths.json`` (every
store path of the images with its NAR hash, from ``nix path-info --json
--recursive``, offline). At stop, each node's systemd journal where it has one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nxc.contracts import Manifest
from nxc.errors import NxcError
from nxc.fsutil import private_dir
from nxc.project import Project
from nxc.runs import RunRecord

if TYPE_CHECKING:
    from nxc.running import RunningDeployment

__all__ = [
    "artifacts",
    "build_for",
    "inputs_document",
    "record_build",
    "record_node_logs",
    "store_paths_document",
]

STORE_PATH = re.compile(r"^/nix/store/[0-9a-z]{32}-[^/]+")
SOURCE_DIR = "source"
NODES_DIR = "nodes"
# A journal bigger than this is cut (its head kept): a record must stay publishable.
JOURNAL_MAX_BYTES = 8 * 1024 * 1024
NO_JOURNAL = "__nxc_no_journal__"


def store_path_of(path: str | Path) -> str | None:
    match = STORE_PATH.match(str(path))
    return match.group(0) if match else None


def build_for(project: Project, manifest: Manifest) -> dict[str, Any] | None:
    """The project's build record whose manifest this is (None for ``-m FILE`` of
    a manifest nxc did not build here)."""
    if manifest.source is None:
        return None
    try:
        builds = project.builds()
    except NxcError:
        return None
    wanted = manifest.source.resolve()
    for record in builds.values():
        with contextlib.suppress(KeyError, TypeError, OSError):
            if Path(record["manifest"]).resolve() == wanted:
                return dict(record)
    return None


def inputs_document(build: dict[str, Any]) -> dict[str, Any]:
    """``inputs.json``: the flake and each locked input, flattened for people."""
    inputs = []
    for name, entry in sorted((build.get("inputs") or {}).items()):
        locked = entry.get("locked") or {}
        url = locked.get("url") or locked.get("path")
        if url is None and locked.get("owner") and locked.get("repo"):
            url = f"{locked.get('type')}:{locked['owner']}/{locked['repo']}"
        inputs.append(
            {
                "name": name,
                "type": str(locked.get("type", "unknown")),
                "url": url,
                "rev": locked.get("rev"),
                "ref": locked.get("ref"),
                "nar_hash": locked.get("narHash"),
                "last_modified": locked.get("lastModified"),
                "locked": locked,
                "original": entry.get("original") or {},
            }
        )
    return {
        "nxc_inputs": 1,
        "flake": {
            "locked_url": build.get("locked_url"),
            "output": build.get("output"),
            "source_path": build.get("source_path"),
            "nar_hash": build.get("source_nar_hash"),
        },
        "inputs": inputs,
    }


def artifacts(manifest: Manifest) -> list[dict[str, Any]]:
    """Every file the manifest names for its roles (kernel, initrd, image…)."""
    found: list[dict[str, Any]] = []
    base = manifest.source.parent if manifest.source else Path.cwd()
    for role in manifest.roles.values():
        named: list[tuple[str, str]] = []
        if role.kernel is not None:
            named.append(("kernel", str(role.kernel)))
        if role.initrd is not None:
            named.append(("initrd", str(role.initrd)))
        for group, spec in (("image", role.image), ("container", role.container)):
            for key, value in sorted((spec or {}).items()):
                if isinstance(value, str) and (value.startswith("/") or "/" in value):
                    path = value if value.startswith("/") else str(base / value)
                    if Path(path).exists():
                        named.append((f"{group}.{key}", path))
        for kind, path in named:
            found.append({"role": role.name, "kind": kind, "path": path})
    return found


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def store_paths_document(manifest: Manifest) -> dict[str, Any]:
    """``store-paths.json``: the closure of the images with NAR hashes (offline).

    Roots are the manifest's own store path and every artifact's; an artifact
    outside the store gets its own SHA-256 instead. Raises NxcError if nix cannot
    describe the paths (not in this store, no nix).
    """
    from nxc.nixbuild import run_nix

    named = artifacts(manifest)
    roots: list[str] = []
    if manifest.source is not None and (root := store_path_of(manifest.source.resolve())):
        roots.append(root)
    for item in named:
        store_path = store_path_of(item["path"])
        item["store_path"] = store_path
        if store_path is None:
            item["sha256"], item["size"] = _sha256_file(Path(item["path"]))
        elif store_path not in roots:
            roots.append(store_path)
    paths: list[dict[str, Any]] = []
    if roots:
        run = run_nix(["path-info", "--json", "--recursive", "--offline", *roots])
        if run.returncode != 0:
            why = run.errors[0] if run.errors else run.stderr.strip()[:200]
            raise NxcError(f"nix path-info failed on the images' store paths: {why}")
        try:
            described = json.loads(run.stdout)
        except json.JSONDecodeError:
            raise NxcError("nix path-info printed something that is not JSON") from None
        for info in sorted(described, key=lambda i: str(i.get("path"))):
            if not info.get("valid", True):
                raise NxcError(f"{info.get('path')}: not a valid path of this Nix store")
            paths.append(
                {
                    "path": info["path"],
                    "narHash": info["narHash"],
                    "narSize": int(info["narSize"]),
                    "references": sorted(info.get("references") or []),
                    "deriver": info.get("deriver"),
                }
            )
    return {"nxc_store_paths": 1, "roots": roots, "paths": paths, "artifacts": named}


def copy_source(source: Path, destination: Path) -> list[str]:
    """Copy the flake's source tree (regular files and directories only); return the
    symbolic links left out (``result`` links into the store, mostly)."""
    skipped: list[str] = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        target = destination / relative
        if path.is_symlink():
            skipped.append(str(relative))
        elif path.is_dir():
            private_dir(target)
        elif path.is_file():
            private_dir(target.parent)
            shutil.copyfile(path, target)
            target.chmod(0o600)
    return skipped


def record_build(project: Project, manifest: Manifest, run: RunRecord) -> None:
    """Write flake.lock, inputs.json, source/ and store-paths.json for this run.

    What cannot be recorded is noted in run.json (and the start goes on): a
    manifest given with -m has no build record, a host without nix no store paths.
    """
    build = build_for(project, manifest)
    if build is None:
        run.update(build=None)
        run.note("no build record for this manifest (started with -m?): no flake inputs")
    else:
        keep = (
            "output", "flake", "locked_url", "out_path", "drv_path", "built_at", "nix_version",
            "nix_args", "parameters", "setup", "source_path", "source_nar_hash", "command",
        )  # fmt: skip
        run.update(build={k: build[k] for k in keep if k in build})
        run.write_json("inputs.json", inputs_document(build))
        lock = build.get("lock")
        if isinstance(lock, dict):
            run.write("flake.lock", json.dumps(lock, indent=2, sort_keys=True) + "\n")
        else:
            run.note("the build record has no flake lock (rebuild with this nxc version)")
        source = build.get("source_path")
        if isinstance(source, str) and Path(source).is_dir():
            skipped = copy_source(Path(source), run.directory / SOURCE_DIR)
            if skipped:
                run.note(f"source: symbolic links not copied: {', '.join(skipped)}")
        else:
            run.note("the flake's source is not in the store any more: source/ not recorded")
    try:
        run.write_json("store-paths.json", store_paths_document(manifest))
    except NxcError as exc:
        run.note(f"store paths not recorded: {exc}")


def record_node_logs(current: RunningDeployment, timeout: float = 20.0) -> None:
    """Before the nodes go: save each running node's systemd journal next to its
    console log, and say in run.json which logs the record holds for each node."""
    from nxc.parallel import fan_out

    run = current.run
    nodes_dir = run.directory / NODES_DIR
    try:
        controls = current.nodes()
    except NxcError as exc:
        run.note(f"node logs: the nodes could not be reached: {exc}")
        return

    def journal(name: str) -> str:
        control = controls.get(name)
        if control is None or not control.is_running():
            return "none: the node was not running at stop"
        command = (
            f"if command -v journalctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then "
            f"journalctl -b --no-pager -o short-iso-precise 2>&1 | head -c {JOURNAL_MAX_BYTES}; "
            f"else echo {NO_JOURNAL}; fi"
        )
        result = control.transport().run(command, timeout=timeout)
        if result.stdout.strip() == NO_JOURNAL.encode():
            return "none: the node has no systemd journal"
        if result.status != 0:
            return f"none: journalctl exited with {result.status}"
        private_dir(nodes_dir)
        run.write(f"{NODES_DIR}/{name}.journal.log", result.stdout)
        return f"{NODES_DIR}/{name}.journal.log"

    names = [node.name for node in current.deployment.nodes]
    outcomes = fan_out(journal, names)
    logs: dict[str, dict[str, str]] = {}
    for outcome in outcomes:
        name = outcome.item
        entry: dict[str, str] = {}
        for suffix, key in ((".console.log", "console"), (".console.log.prev", "console_prev")):
            if (nodes_dir / f"{name}{suffix}").is_file():
                entry[key] = f"{NODES_DIR}/{name}{suffix}"
        entry.setdefault("console", "none: the flavour keeps no console log")
        if outcome.error is not None:
            first = (str(outcome.error).splitlines() or [type(outcome.error).__name__])[0]
            entry["journal"] = f"none: {first}"
        else:
            entry["journal"] = str(outcome.value)
        logs[name] = entry
    run.update(logs=logs)
