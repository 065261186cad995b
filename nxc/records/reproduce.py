"""``nxc reproduce ARCHIVE``: start the published run again, the same way, and rerun
its scenarios.

1. verify the archive (a failed check stops here);
2. extract the flake's source (``source/``) as a new project directory;
3. get the very images: import ``closure.nar`` into the Nix store when the archive
   has one, or rebuild from the source and its locked inputs (``--rebuild``), saying
   whether the rebuild gave the same store paths;
4. start the same deployment with the same parameters (roles, flavour options,
   timeout, network topology) and compare it with the recorded one;
5. run every scenario the original driver sessions ran, in order, and compare
   their results; then stop (unless ``--keep``).

The new run's record says which archive it reproduces (``reproduces`` in run.json).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nxc.errors import NxcError
from nxc.records.layout import CLOSURE
from nxc.records.verify import Archive, open_archive, verify

__all__ = ["ReproduceError", "Reproduced", "ScenarioOutcome", "reproduce"]

Say = Callable[[str], None]


class ReproduceError(NxcError):
    """The archive cannot be reproduced here as asked."""


@dataclass(frozen=True)
class ScenarioOutcome:
    session: str
    script: str
    success: bool
    original: bool | None


@dataclass
class Reproduced:
    run_id: str
    original: str
    project: Path
    source: str  # "closure" | "rebuild"
    same_images: bool
    differences: list[str] = field(default_factory=list)
    scenarios: list[ScenarioOutcome] = field(default_factory=list)
    stopped: bool = True

    @property
    def ok(self) -> bool:
        return not self.differences and all(s.success for s in self.scenarios)


def _extract_source(archive: Archive, target: Path) -> None:
    names = [n for n in archive.members if n.startswith("source/")]
    if not names:
        raise ReproduceError(
            f"{archive.path}: the record has no source/ (the manifest was not built by nxc): "
            "nothing to start from"
        )
    for name in names:
        destination = target / name.removeprefix("source/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(name) as src, open(destination, "wb") as dst:
            shutil.copyfileobj(src, dst)


def _import_closure(archive: Archive) -> None:
    from nxc.tools import require_tool

    nix_store = require_tool("nix-store")
    # nix's messages go to a file: a pipe nobody reads while the closure streams in
    # could fill up and stall both sides.
    with archive.open(CLOSURE) as stream, tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [nix_store, "--import"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors
        )
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            shutil.copyfileobj(stream, process.stdin)
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        process.wait()
        errors.seek(0)
        stderr = errors.read()
    if process.returncode != 0:
        why = (stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise ReproduceError(f"nix-store --import of {CLOSURE} failed: {why}")


def _node_view(deployment: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What makes two deployments the same one (not ids, ports or keys)."""
    return [
        (n.get("name"), n.get("role"), n.get("index"), n.get("ipv4"), n.get("ipv6"), n.get("mac"))
        for n in deployment.get("nodes", [])
    ]


def compare_deployments(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    differences = []
    if old.get("flavour") != new.get("flavour"):
        differences.append(f"flavour {new.get('flavour')} instead of {old.get('flavour')}")
    if old.get("roles") != new.get("roles"):
        differences.append(f"roles {new.get('roles')} instead of {old.get('roles')}")
    if old.get("network") != new.get("network"):
        differences.append("the experiment network differs")
    before, after = _node_view(old), _node_view(new)
    if before != after:
        for a, b in zip(before, after, strict=False):
            if a != b:
                differences.append(f"node {a[0]}: {b} instead of {a}")
        if len(before) != len(after):
            differences.append(f"{len(after)} nodes instead of {len(before)}")
    return differences


def reproduce(
    path: Path,
    directory: Path,
    *,
    rebuild: bool = False,
    override_inputs: tuple[tuple[str, str], ...] = (),
    keep: bool = False,
    say: Say | None = None,
) -> Reproduced:
    from nxc import nixbuild, session
    from nxc.contracts import Manifest
    from nxc.driver.session import open_driver
    from nxc.project import Project
    from nxc.setup_toml import SetupChoice

    tell = say or (lambda _msg: None)
    tell(f"verifying {path}")
    report = verify(path)
    if not report.ok:
        raise ReproduceError(
            f"{path}: the archive does not verify ({report.problems[0]}); "
            "run 'nxc verify' for every problem"
        )
    if directory.exists() and any(directory.iterdir()):
        raise ReproduceError(f"{directory}: exists and is not empty (choose another with -d)")
    archive = open_archive(path)
    try:
        run = archive.json("run.json")
        recorded_manifest = archive.json("manifest.json")
        old_deployment = (
            archive.json("deployment.json") if "deployment.json" in archive.members else {}
        )
        store = archive.json("store-paths.json") if "store-paths.json" in archive.members else {}
        build = run.get("build") or {}
        scenarios = []
        for name in sorted(archive.members):
            if name.startswith("driver/") and name.endswith("/scenario.py"):
                session_dir = name.rsplit("/", 1)[0]
                report_name = f"{session_dir}/report.json"
                found: dict[str, Any] = {}
                if report_name in archive.members:
                    with contextlib.suppress(ValueError):
                        found = archive.json(report_name)
                script = str(found.get("script") or "scenario.py")
                text = archive.read(name).decode()
                success = found.get("success")
                scenarios.append((session_dir, script, text, success))
        netem_text = (
            archive.read("netem-topology.json")
            if (run.get("request") or {}).get("netem") and "netem-topology.json" in archive.members
            else None
        )
        directory.mkdir(parents=True, exist_ok=True)
        tell(f"extracting the flake's source to {directory}")
        _extract_source(archive, directory)
        use_closure = CLOSURE in archive.members and not rebuild
        if use_closure:
            tell(f"importing {CLOSURE} into the Nix store")
            _import_closure(archive)
    finally:
        archive.close()

    project = Project(directory)
    recorded_root = build.get("out_path") or (store.get("roots") or [None])[0]
    if use_closure:
        if not recorded_root:
            raise ReproduceError(f"{path}: store-paths.json names no root to start from")
        manifest_path = Path(recorded_root) / "manifest.json"
        if not manifest_path.is_file():
            raise ReproduceError(f"{manifest_path}: not in the store after the import")
        out_path = Path(recorded_root)
        record: dict[str, Any] = {
            key: build[key]
            for key in ("output", "locked_url", "drv_path", "inputs")
            if key in build
        }
    else:
        output = build.get("output")
        if not output:
            raise ReproduceError(f"{path}: the record does not say which output was built")
        tell(f"rebuilding {output} from the recorded source and locked inputs")
        extra = [*build.get("nix_args", [])]
        for name, ref in override_inputs:
            extra += ["--override-input", name, ref]
        setup = build.get("setup")
        built = nixbuild.build(
            directory,
            output,
            extra_args=extra,
            parameters=build.get("parameters") or None,
            setup=SetupChoice(setup.get("variant"), dict(setup.get("params") or {}))
            if isinstance(setup, dict)
            else None,
        )
        manifest_path, out_path = built.manifest, built.out_path
        record = built.to_record()
    manifest = Manifest.load(manifest_path)
    project.ensure_state_dir()
    project.record_build(
        manifest.flavour,
        {
            **record,
            "flake": str(directory),
            "out_path": str(out_path),
            "manifest": str(manifest_path),
            "reproduces": report.digest,
        },
    )
    same_images = str(out_path) == str(recorded_root)
    differences: list[str] = []
    if manifest.raw != recorded_manifest:
        differences.append("the build manifest differs from the recorded manifest.json")
    if not same_images:
        differences.append(f"the images are {out_path}, not the recorded {recorded_root}")

    request = run.get("request") or {}
    roles = request.get("roles") or run.get("roles") or {}
    with tempfile.TemporaryDirectory(prefix="nxc-reproduce-") as scratch:
        topology = None
        if netem_text is not None:
            topology = Path(scratch) / "netem-topology.json"
            topology.write_bytes(netem_text)
        start_request = session.StartRequest(
            overrides={str(k): int(v) for k, v in roles.items()},
            options=dict(request.get("options") or {}),
            ready_timeout=float(request.get("ready_timeout") or run.get("ready_timeout") or 180),
            topology=topology,
            composition_topology=bool(request.get("composition_topology", True)),
        )
        tell(f"starting {manifest.composition} ({manifest.flavour}) as recorded")
        with project.lock():
            current = session.start(project, manifest, start_request, progress=tell)
    result = Reproduced(
        run_id=current.run.id,
        original=str(run["id"]),
        project=directory,
        source="closure" if use_closure else "rebuild",
        same_images=same_images,
        differences=differences,
    )
    try:
        current.run.update(
            reproduces={
                "run": str(run["id"]),
                "archive_digest": report.digest,
                "from": result.source,
                "same_images": same_images,
            }
        )
        new_deployment = json.loads(current.deployment.to_json())
        differences += compare_deployments(old_deployment, new_deployment)
        for session_dir, script, text, original in scenarios:
            tell(f"running {script} (recorded in {session_dir})")
            with open_driver(current) as driver:
                current.run.save_scenario(driver.out_dir, text)
                ok = driver.run_script(text, script)
            result.scenarios.append(ScenarioOutcome(session_dir, script, ok, original))
    finally:
        if not keep:
            tell("stopping")
            with project.lock(wait=30):
                stop = session.stop(project, progress=tell)
            result.stopped = stop.ok
        else:
            result.stopped = False
    return result
