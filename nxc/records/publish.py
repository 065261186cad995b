"""``nxc publish``: one archive of a run record, to put next to a paper.

The archive is a ZIP file (not a tarball) with one top directory named after the
run. ZIP because every member can be read, checked and extracted on its own: a
damaged byte spoils one member, not everything after it (``nxc verify`` names
every damaged file instead of stopping at the first), the central directory lists
the content without reading it, data repositories such as Zenodo preview a ZIP's
file tree, and every operating system opens one without extra tools. Members are
written in name order with fixed times and modes, so the same run published twice
gives the same bytes.

Inside ``<run id>/``:

    README.md               what was run, with which inputs, how to verify and reproduce
    CITATION.cff            citation metadata (Citation File Format 1.2.0)
    ro-crate-metadata.json  RO-Crate 1.1 metadata (Process Run Crate), each file with SHA-256
    SHA256SUMS              SHA-256 of every other file (``sha256sum -c`` reads it)
    closure.nar             optional: ``nix-store --export`` of the images' closure
    run.json manifest.json deployment.json …   the run record as it is

The ZIP comment holds ``nxc-archive 1 sha256sums=<SHA-256 of SHA256SUMS>``: that
digest names the whole archive's content (quote it in the paper). No private key,
password or token may be in it: every file is scanned (:mod:`nxc.records.secrets`)
and the archive is refused if anything is found.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

import nxc
from nxc.errors import NxcError
from nxc.records import secrets
from nxc.records.closure import check_closure
from nxc.records.layout import (
    ARCHIVE_COMMENT,
    CITATION,
    CLOSURE,
    CRATE,
    GENERATED,
    README,
    SUMS,
)
from nxc.records.summary import duration_of, sessions
from nxc.runs import RunRecord, parse_time

__all__ = [
    "ARCHIVE_COMMENT",
    "CLOSURE",
    "SUMS",
    "PublishError",
    "Published",
    "publish",
    "start_command",
]

PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
_EPOCH_MIN = (1980, 1, 1, 0, 0, 0)  # the earliest time a ZIP entry can hold


class PublishError(NxcError):
    """The run cannot be published as asked."""


@dataclass
class Published:
    path: Path
    digest: str  # SHA-256 of SHA256SUMS
    files: int
    size: int
    closure_paths: int = 0
    notes: list[str] = field(default_factory=list)


def sha256_of(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def record_files(directory: Path) -> list[tuple[str, Path]]:
    """Every regular file of a run record, by name relative to it (in name order)."""
    found = []
    for path in sorted(directory.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        name = path.relative_to(directory).as_posix()
        if any(part.startswith(".") for part in name.split("/")):
            continue  # temporary files of atomic writes, editor leftovers
        if name in GENERATED or name == CLOSURE:
            continue
        found.append((name, path))
    return found


def start_command(run: dict[str, Any], manifest: str = "MANIFEST") -> list[str]:
    """The ``nxc start`` command line that starts the same deployment again."""
    request = run.get("request") or {}
    command = ["nxc", "start", "-p", "experiment", "-m", manifest]
    for role, count in (request.get("roles") or {}).items():
        command += ["-r", f"{role}={count}"]
    for name, value in (request.get("options") or {}).items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            command += [f"--{name}", str(item)]
    timeout = request.get("ready_timeout", run.get("ready_timeout"))
    if timeout and float(timeout) != 180.0:
        command += ["--timeout", f"{float(timeout):g}"]
    if request.get("netem"):
        command += ["--netem", str(request["netem"])]
    if request.get("composition_topology") is False:
        command.append("--no-netem")
    return command


def _quote(argv: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def _json_of(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _release_date(run: dict[str, Any]) -> dt.datetime:
    for key in ("stopped_at", "failed_at", "running_at", "started_at"):
        if run.get(key):
            with contextlib.suppress(ValueError):
                return parse_time(run[key])
    return dt.datetime.now(dt.UTC)


def _title(run: dict[str, Any]) -> str:
    return f"nxc run {run['id']}: {run.get('composition')} on {run.get('flavour')}"


def readme(record: RunRecord, run: dict[str, Any], with_closure: bool, archive_name: str) -> str:
    """The archive's README: what was run, with which inputs, how to reproduce it."""
    directory = record.directory
    lines = [f"# {_title(run)}", ""]
    lines += [
        f"A run record published by nxc {nxc.__version__}. The run started on "
        f"{run.get('started_at')} and ended **{run.get('status')}**"
        + (f" ({run['error']})" if run.get("error") else "")
        + (f" after {duration_of(run):.1f} s." if duration_of(run) is not None else "."),
        "",
        "## What was run",
        "",
        f"- composition `{run.get('composition')}`, flavour `{run.get('flavour')}`",
        f"- nodes: {', '.join(run.get('nodes') or []) or '-'} "
        f"(roles: {', '.join(f'{r}={n}' for r, n in (run.get('roles') or {}).items())})",
    ]
    options = run.get("options") or {}
    if options:
        lines.append(f"- flavour options: {', '.join(f'{k}={v}' for k, v in options.items())}")
    host = run.get("host") or {}
    if host:
        lines.append(
            f"- host: {host.get('cpu_model')}, {host.get('cores')} cores, "
            f"{host.get('memory_mb')} MiB, Linux {host.get('kernel')}, {host.get('os')}, "
            f"accelerator {host.get('accelerator')}"
        )
    g5k = run.get("grid5000")
    if g5k:
        jobs = ", ".join(f"{j['site']}:{j['id']}" for j in g5k.get("jobs", []))
        lines.append(
            f"- Grid'5000: jobs {jobs}; sites {', '.join(g5k.get('sites', []))}; clusters "
            f"{', '.join(g5k.get('clusters', []))}; nodes {' '.join(g5k.get('nodes', []))}"
        )
    lines += ["", "Commands, in order:", "", "```"]
    build = run.get("build") or {}
    if build.get("command"):
        lines.append(f"{_quote(build['command'])}    # built {build.get('built_at', '')}")
    for command in run.get("commands") or []:
        lines.append(f"{_quote(command['argv'])}    # {command.get('what', '')} {command['at']}")
    lines += ["```", ""]
    found = sessions(record, run)
    if found:
        lines += ["## Results", ""]
        for session in found:
            lines.append(f"- {session.line()}")
        lines.append("")
    lines += ["## Inputs", ""]
    inputs = _json_of(directory / "inputs.json")
    if isinstance(inputs, dict):
        flake = inputs.get("flake", {})
        lines.append(f"- flake `{flake.get('locked_url')}`, output `{flake.get('output')}`")
        for item in inputs.get("inputs", []):
            lines.append(
                f"- input `{item['name']}`: {item.get('type')} `{item.get('url')}` "
                f"rev `{item.get('rev') or '-'}` narHash `{item.get('nar_hash') or '-'}`"
            )
    else:
        lines.append("- no flake inputs recorded (the manifest was not built by nxc here)")
    store = _json_of(directory / "store-paths.json")
    if isinstance(store, dict):
        lines.append(
            f"- images: {len(store.get('paths', []))} store paths, listed with their NAR "
            "hashes in `store-paths.json`"
        )
    lines += [
        "",
        "## Files",
        "",
        "| file | what it is |",
        "|---|---|",
        "| `run.json` | the run: options, phases and timings, host, commands (schema run-1) |",
        "| `manifest.json` | the build manifest that was started |",
        "| `deployment.json` | the deployment: nodes, roles, addresses (public keys only) |",
        "| `flake.lock`, `inputs.json`, `source/` | the flake as Nix built it, and its "
        "locked inputs |",
        "| `store-paths.json` | every store path of the images with its NAR hash |",
        "| `nodes/` | each node's console log (and systemd journal where it has one) |",
        "| `driver/<n>-<time>/` | each driver session: `scenario.py`, `report.json`, `report.xml` "
        "(JUnit), `log.jsonl`, netem validation reports |",
        "| `metrics.sqlite`, `report/` | metrics scraped from the nodes, and `nxc report` output, "
        "when present |",
        "| `faults.jsonl` | every fault and heal injected by the driver, with its time and "
        "offset, when present |",
        "| `sync.log` | the log of the deployment's sync service (redis-server) |",
        f"| `{SUMS}` | SHA-256 of every file; the archive digest is the SHA-256 of this file |",
    ]
    if with_closure:
        lines.append(f"| `{CLOSURE}` | the images' Nix closure (`nix-store --export`) |")
    manifest_path = "MANIFEST"
    if build.get("out_path"):
        manifest_path = f"{build['out_path']}/manifest.json"
    elif isinstance(store, dict) and store.get("roots"):
        manifest_path = f"{store['roots'][0]}/manifest.json"
    start = _quote(start_command(run, manifest_path))
    lines += [
        "",
        "## Verify",
        "",
        "```",
        f"nxc verify {archive_name}          # checksums, schemas, closure, no secrets",
        f"cd {run['id']} && sha256sum -c {SUMS}   # checksums only, without nxc",
        "```",
        "",
        "## Reproduce",
        "",
        "```",
        f"nxc reproduce {archive_name}"
        + ("       # imports closure.nar, starts, reruns the scenarios" if with_closure else ""),
        "```",
        "",
        "By hand:",
        "",
        "```",
    ]
    lines.append(f"cp -r {run['id']}/source experiment")
    if with_closure:
        lines.append(f"nix-store --import < {run['id']}/{CLOSURE}")
    else:
        output = build.get("output", "COMPOSITION::FLAVOUR")
        nix_args = " ".join(build.get("nix_args") or [])
        lines.append(f"nxc build -p experiment -C {output} {nix_args}".rstrip())
    lines.append(start)
    for session in found:
        if (session.directory / "scenario.py").is_file():
            where = session.directory.relative_to(directory).as_posix()
            lines.append(f"nxc driver -p experiment {run['id']}/{where}/scenario.py")
    lines += ["nxc stop -p experiment", "```", ""]
    if run.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in run["notes"]] + [""]
    return "\n".join(lines)


def _person(text: str) -> dict[str, str]:
    text = text.strip()
    if "," in text:
        family, _, given = text.partition(",")
        return {"family-names": family.strip(), "given-names": given.strip()}
    given, _, family = text.rpartition(" ")
    if given:
        return {"family-names": family, "given-names": given}
    return {"name": text}


def citation(run: dict[str, Any], authors: list[str], license_id: str | None) -> str:
    released = _release_date(run)
    people = [_person(a) for a in authors] or [{"name": "Unknown"}]
    document: dict[str, Any] = {
        "cff-version": "1.2.0",
        "message": "If you use this experiment's data or reproduce it, please cite it as below.",
        "type": "dataset",
        "title": _title(run),
        "version": run["id"],
        "date-released": released.date().isoformat(),
        "authors": people,
        "abstract": (
            f"Run record of the nxc composition '{run.get('composition')}' on flavour "
            f"'{run.get('flavour')}' ({len(run.get('nodes') or [])} nodes), with the inputs, "
            "store paths, logs and reports needed to verify and reproduce it."
        ),
        "keywords": ["nxc", "nix", "reproducibility", "distributed systems", "experiment"],
        "references": [
            {
                "type": "software",
                "title": "nxc",
                "version": str(run.get("nxc_version", nxc.__version__)),
                "authors": [{"name": "the nxc authors"}],
            }
        ],
    }
    if license_id:
        document["license"] = license_id
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


_FORMATS = {
    ".json": "application/json",
    ".jsonl": "application/jsonl",
    ".xml": "application/xml",
    ".md": "text/markdown",
    ".cff": "application/x-yaml",
    ".py": "text/x-python",
    ".nix": "text/plain",
    ".log": "text/plain",
    ".lock": "application/json",
    ".sqlite": "application/vnd.sqlite3",
    ".html": "text/html",
    ".png": "image/png",
    ".nar": "application/x-nix-nar",
}


def crate_metadata(
    run: dict[str, Any],
    files: dict[str, tuple[str, int]],
    authors: list[str],
    license_id: str | None,
) -> dict[str, Any]:
    """RO-Crate metadata (a Process Run Crate): the files with their SHA-256, the run
    as a CreateAction of nxc, its inputs as objects and its outputs as results."""
    from rocrate.model.contextentity import ContextEntity
    from rocrate.model.person import Person
    from rocrate.model.softwareapplication import SoftwareApplication
    from rocrate.rocrate import ROCrate

    crate = ROCrate(version="1.1")
    released = _release_date(run)
    crate.root_dataset["datePublished"] = released.isoformat()
    crate.name = _title(run)
    crate.description = (
        f"Run record of the nxc composition '{run.get('composition')}' (flavour "
        f"'{run.get('flavour')}', {len(run.get('nodes') or [])} nodes), as published by "
        f"'nxc publish'. See README.md for how to verify and reproduce it."
    )
    if license_id:
        crate.license = license_id
    crate.root_dataset["conformsTo"] = {"@id": PROCESS_RUN_CRATE}
    crate.add(
        ContextEntity(
            crate,
            PROCESS_RUN_CRATE,
            properties={"@type": "CreativeWork", "name": "Process Run Crate", "version": "0.5"},
        )
    )
    people = [
        crate.add(Person(crate, f"#author-{n}", properties={"name": name.strip()}))
        for n, name in enumerate(authors, 1)
    ]
    if people:
        crate.root_dataset["author"] = people
    entities = {}
    for name, (digest, size) in sorted(files.items()):
        suffix = Path(name).suffix
        properties: dict[str, Any] = {"name": name, "contentSize": str(size)}
        if digest:
            properties["sha256"] = digest
        if suffix in _FORMATS:
            properties["encodingFormat"] = _FORMATS[suffix]
        entities[name] = crate.add_file(source=None, dest_path=name, properties=properties)
    tool = crate.add(
        SoftwareApplication(
            crate,
            f"#nxc-{run.get('nxc_version', nxc.__version__)}",
            properties={
                "name": "nxc",
                "version": str(run.get("nxc_version", nxc.__version__)),
                "description": "Composes reproducible distributed environments with Nix "
                "and runs experiments on them",
            },
        )
    )
    inputs = {"manifest.json", "flake.lock", "inputs.json", "store-paths.json", "deployment.json"}
    objects = [e for n, e in entities.items() if n in inputs or n.startswith("source/")]
    outputs = [
        e
        for n, e in entities.items()
        if n.startswith(("driver/", "nodes/", "report/")) or n == "metrics.sqlite"
    ]
    end = run.get("stopped_at") or run.get("failed_at")
    action: dict[str, Any] = {
        "name": f"nxc start of {run['id']}",
        "startTime": run.get("started_at"),
        "actionStatus": {
            "@id": "http://schema.org/FailedActionStatus"
            if run.get("status") == "failed"
            else "http://schema.org/CompletedActionStatus"
        },
    }
    if end:
        action["endTime"] = end
    if run.get("error"):
        action["error"] = run["error"]
    if people:
        action["agent"] = people[0]
    crate.add_action(
        tool, identifier=f"#run-{run['id']}", object=objects, result=outputs, properties=action
    )
    metadata: dict[str, Any] = crate.metadata.generate()
    return metadata


def _closure_roots(directory: Path) -> list[str]:
    store = _json_of(directory / "store-paths.json")
    if not isinstance(store, dict) or not store.get("roots"):
        raise PublishError(
            "--with-closure: the record lists no store paths (store-paths.json): nothing to export"
        )
    return [str(r) for r in store["roots"]]


def export_closure(roots: list[str], target: Path) -> None:
    """``nix-store --export $(nix-store -qR ROOTS) > target`` (no shell involved)."""
    from nxc.tools import require_tool

    nix_store = require_tool("nix-store")
    query = subprocess.run(
        [nix_store, "--query", "--requisites", *roots], capture_output=True, text=True
    )
    if query.returncode != 0:
        why = (query.stderr.strip().splitlines() or ["?"])[-1]
        raise PublishError(
            f"--with-closure: the images' store paths are not in this Nix store any more "
            f"(garbage-collected?): {why}"
        )
    paths = query.stdout.split()
    with open(target, "wb") as out:
        done = subprocess.run(
            [nix_store, "--export", *paths], stdout=out, stderr=subprocess.PIPE, text=True
        )
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise PublishError(f"nix-store --export failed: {why}")


def closure_findings(path: Path) -> list[secrets.Finding]:
    """Secret-scan findings in an export, each named after the store path holding it."""
    from nxc.records.nar import read_export

    findings = secrets.scan_file(path, CLOSURE)
    if not findings:
        return []
    with open(path, "rb") as handle:
        ranges = [(p.start, p.end, p.path) for p in read_export(handle)]
    named = []
    for finding in findings:
        owner = next((p for s, e, p in ranges if s <= finding.offset < e), None)
        where = f"{CLOSURE} ({owner})" if owner else CLOSURE
        named.append(secrets.Finding(where, finding.offset, finding.line, finding.what))
    return named


def _zip_time(run: dict[str, Any]) -> tuple[int, int, int, int, int, int]:
    when = _release_date(run)
    stamp = (when.year, when.month, when.day, when.hour, when.minute, when.second)
    return max(stamp, _EPOCH_MIN)


@contextlib.contextmanager
def _output(path: Path) -> Iterator[Path]:
    """A temporary file next to ``path``, renamed to it on success, removed otherwise."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def publish(
    record: RunRecord,
    output: Path,
    *,
    with_closure: bool = False,
    authors: list[str] | None = None,
    license_id: str | None = None,
    allow_running: bool = False,
) -> Published:
    """Write the archive of ``record`` to ``output`` (see the module documentation)."""
    run = record.load()
    if run["status"] in ("starting", "running", "partial") and not allow_running:
        raise PublishError(
            f"run {record.id} is still {run['status']}: stop it first (nxc stop), so that "
            "its record is complete"
        )
    authors = [a for a in (authors or []) if a.strip()]
    directory = record.directory
    top = record.id
    files = record_files(directory)
    notes: list[str] = []
    if not authors:
        notes.append("no --author given: CITATION.cff names 'Unknown'")

    findings = [f for name, path in files for f in secrets.scan_file(path, name)]
    if findings:
        raise _refusal(findings)

    output = output.resolve()
    if output.is_relative_to(directory.resolve()):
        raise PublishError(f"{output}: the archive cannot be written inside the run record")
    with tempfile.TemporaryDirectory(prefix="nxc-publish-", dir=output.parent) as scratch:
        closure: Path | None = None
        closure_paths = 0
        if with_closure:
            closure = Path(scratch) / CLOSURE
            export_closure(_closure_roots(directory), closure)
            closure_problems = closure_findings(closure)
            if closure_problems:
                raise _refusal(closure_problems)
            with open(closure, "rb") as handle:
                problems, closure_paths = check_closure(
                    handle, _json_of(directory / "store-paths.json")
                )
            if problems:
                raise PublishError(f"the exported closure does not match the record: {problems[0]}")

        digests: dict[str, tuple[str, int]] = {}
        for name, path in files:
            with open(path, "rb") as handle:
                digests[name] = (sha256_of(handle), path.stat().st_size)
        if closure is not None:
            with open(closure, "rb") as handle:
                digests[CLOSURE] = (sha256_of(handle), closure.stat().st_size)
        generated: dict[str, bytes] = {
            README: readme(record, run, with_closure, output.name).encode(),
            CITATION: citation(run, authors, license_id).encode(),
        }
        for name, data in generated.items():
            digests[name] = (hashlib.sha256(data).hexdigest(), len(data))
            findings += secrets.scan_stream(io.BytesIO(data), name)
        described = dict(digests)
        described[SUMS] = ("", 0)  # listed without a hash: it holds the crate's
        crate = json.dumps(
            crate_metadata(run, described, authors, license_id),
            indent=2,
            sort_keys=True,
            ensure_ascii=False,
        ).encode()
        generated[CRATE] = crate + b"\n"
        digests[CRATE] = (hashlib.sha256(generated[CRATE]).hexdigest(), len(generated[CRATE]))
        findings += secrets.scan_stream(io.BytesIO(generated[CRATE]), CRATE)
        if findings:
            raise _refusal(findings)
        sums = "".join(f"{digests[n][0]}  {n}\n" for n in sorted(digests)).encode()
        generated[SUMS] = sums
        digest = hashlib.sha256(sums).hexdigest()

        stamp = _zip_time(run)
        members: list[tuple[str, Path | bytes]] = [(n, p) for n, p in files]
        members += list(generated.items())
        if closure is not None:
            members.append((CLOSURE, closure))
        with _output(output) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
            for name, source in sorted(members, key=lambda m: m[0]):
                info = zipfile.ZipInfo(f"{top}/{name}", date_time=stamp)
                info.external_attr = (0o100644 & 0xFFFF) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # Unix: keeps the modes above meaningful
                if isinstance(source, bytes):
                    archive.writestr(info, source, compresslevel=6)
                else:
                    with (
                        open(source, "rb") as src,
                        archive.open(info, "w", force_zip64=True) as dst,
                    ):
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
            archive.comment = ARCHIVE_COMMENT.format(digest=digest).encode()
    return Published(
        path=output,
        digest=digest,
        files=len(digests) + 1,
        size=output.stat().st_size,
        closure_paths=closure_paths,
        notes=notes,
    )


def _refusal(findings: list[secrets.Finding]) -> PublishError:
    more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
    listing = "\n".join(f"  {f}" for f in findings[:20])
    return PublishError(
        f"refusing to publish: {findings[0]}{more}: a record must hold no private key, "
        f"password or token\n{listing}"
    )
