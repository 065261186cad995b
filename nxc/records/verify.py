"""``nxc verify ARCHIVE``: check a published run archive, and say exactly what differs.

Checks, each failure one line naming the file (and the store path, for the closure):

- the archive opens, and every member lies under one top directory;
- ``SHA256SUMS`` is well formed, its SHA-256 is the digest in the ZIP comment (and
  the one given with ``--digest``), and it lists every file and only those;
- every file's SHA-256 is the one listed. ``ro-crate-metadata.json`` lists each
  file's SHA-256 too: when a file matches the crate but not ``SHA256SUMS``, it is
  ``SHA256SUMS`` that was altered, and it is named instead of the file;
- every record document against its schema (run, manifest, deployment, topology,
  inputs, store paths, scenario reports), flake.lock, CITATION.cff and the RO-Crate
  metadata (read back with the ``rocrate`` library);
- the records agree with each other (run id, deployment, the artifacts lie in the
  listed store paths, which form a closed closure);
- ``closure.nar``, when present, holds exactly the listed store paths, each with the
  listed NAR hash and size (read without Nix: :mod:`nxc.records.nar`);
- no file holds a private key, password or token (:mod:`nxc.records.secrets`).
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

import yaml

from nxc.contracts.validate import validate_document
from nxc.errors import ContractError, NxcError
from nxc.records import secrets
from nxc.records.closure import check_closure
from nxc.records.layout import CITATION, CLOSURE, CRATE, SUMS

__all__ = ["Archive", "VerifyError", "VerifyReport", "check_closure", "open_archive", "verify"]

_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
_COMMENT = re.compile(r"^nxc-archive 1 sha256sums=([0-9a-f]{64})$")
_SCHEMAS = {
    "run.json": "run",
    "manifest.json": "manifest",
    "deployment.json": "deployment",
    "netem-topology.json": "topology",
    "inputs.json": "inputs",
    "store-paths.json": "store-paths",
}
REQUIRED = ("run.json", "manifest.json", SUMS, CRATE)


class VerifyError(NxcError):
    """The file is not an archive nxc can read at all."""


@dataclass
class VerifyReport:
    archive: Path
    run_id: str = ""
    digest: str = ""
    files: int = 0
    closure_paths: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Tee:
    """A reader that hashes what passes through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.hasher.update(data)
        return data


@dataclass
class Archive:
    """An opened archive: its top directory and members by name relative to it."""

    path: Path
    zip: zipfile.ZipFile
    top: str
    members: dict[str, zipfile.ZipInfo]
    outside: list[str]

    def open(self, name: str) -> IO[bytes]:
        return self.zip.open(self.members[name])

    def read(self, name: str) -> bytes:
        return self.zip.read(self.members[name])

    def json(self, name: str) -> Any:
        return json.loads(self.read(name))

    def close(self) -> None:
        self.zip.close()


def open_archive(path: Path) -> Archive:
    """Open a published archive or raise a one-line :class:`VerifyError`."""
    try:
        handle = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise VerifyError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise VerifyError(f"{path}: a directory, not an archive") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise VerifyError(
            f"{path}: not a readable ZIP archive (corrupt or truncated: {exc})"
        ) from None
    names = [i for i in handle.infolist() if not i.is_dir()]
    tops = {i.filename.split("/", 1)[0] for i in names if "/" in i.filename}
    if len(tops) != 1:
        handle.close()
        raise VerifyError(
            f"{path}: not an nxc archive (expected one top directory, found {len(tops)})"
        )
    top = tops.pop()
    members: dict[str, zipfile.ZipInfo] = {}
    outside: list[str] = []
    for info in names:
        name = info.filename
        relative = name[len(top) + 1 :] if name.startswith(top + "/") else None
        parts = (relative or "").split("/")
        if relative is None or name.startswith("/") or ".." in parts or "" in parts:
            outside.append(name)
            continue
        members[relative] = info
    if SUMS not in members:
        handle.close()
        raise VerifyError(f"{path}: not an nxc archive ({top}/{SUMS} is missing)")
    return Archive(path, handle, top, members, outside)


def parse_sums(text: bytes) -> tuple[dict[str, str], list[str]]:
    listed: dict[str, str] = {}
    problems: list[str] = []
    try:
        lines = text.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return {}, [f"{SUMS}: not UTF-8 text"]
    for number, line in enumerate(lines, 1):
        match = _SUM_LINE.match(line)
        if match is None:
            problems.append(f"{SUMS} line {number}: malformed (expected '<SHA-256>  <file>')")
            continue
        digest, name = match.groups()
        if name in listed:
            problems.append(f"{SUMS} line {number}: {name} is listed twice")
        listed[name] = digest
    return listed, problems


def _crate_hashes(archive: Archive, problems: list[str]) -> dict[str, str]:
    """File name -> SHA-256 from the RO-Crate metadata (read with the rocrate library)."""
    from rocrate.rocrate import ROCrate

    try:
        metadata = archive.json(CRATE)
        crate = ROCrate(metadata)
    except Exception as exc:  # the library raises many kinds on bad input
        problems.append(f"{CRATE}: not valid RO-Crate metadata ({type(exc).__name__}: {exc})")
        return {}
    hashes: dict[str, str] = {}
    described: set[str] = set()
    for entity in crate.data_entities:
        if "File" not in (entity.type if isinstance(entity.type, list) else [entity.type]):
            continue
        name = unquote(entity.id)
        described.add(name)
        digest = entity.get("sha256")
        if isinstance(digest, str):
            hashes[name] = digest
    for name in sorted(set(archive.members) - described - {CRATE}):
        problems.append(f"{CRATE}: does not describe {name}")
    for name in sorted(described - set(archive.members)):
        problems.append(f"{CRATE}: describes {name}, which is not in the archive")
    return hashes


def _check_documents(archive: Archive, problems: list[str]) -> dict[str, Any]:
    documents: dict[str, Any] = {}
    for name in sorted(archive.members):
        kind = _SCHEMAS.get(name)
        if kind is None and name.startswith("driver/") and name.endswith("/report.json"):
            kind = "report"
        if not name.endswith((".json", ".lock")) and name != CITATION:
            continue
        try:
            raw = archive.read(name)
        except (zipfile.BadZipFile, zlib.error, EOFError):
            continue  # reported with the checksums
        try:
            document = yaml.safe_load(raw) if name == CITATION else json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            first = (str(exc).splitlines() or [""])[0]
            problems.append(f"{name}: not valid {'YAML' if name == CITATION else 'JSON'} ({first})")
            continue
        documents[name] = document
        if kind is not None:
            try:
                validate_document(document, kind, name)
            except ContractError as exc:
                problems.append(str(exc))
        elif name == "flake.lock" and not (
            isinstance(document, dict) and {"nodes", "root", "version"} <= set(document)
        ):
            problems.append("flake.lock: not a Nix lock file (nodes, root, version)")
        elif name == CITATION:
            missing = [
                k
                for k in ("cff-version", "message", "title", "authors")
                if not isinstance(document, dict) or k not in document
            ]
            if missing:
                problems.append(f"{CITATION}: {', '.join(missing)} missing")
        elif (
            name.endswith(".json")
            and "/netem-validation" in "/" + name
            and (not isinstance(document, dict) or document.get("nxc_netem_validation") != 1)
        ):
            problems.append(f"{name}: not an nxc netem validation report")
    return documents


def _cross_check(archive: Archive, documents: dict[str, Any], problems: list[str]) -> None:
    run = documents.get("run.json")
    if isinstance(run, dict) and run.get("id") != archive.top:
        problems.append(f"run.json: id {run.get('id')!r} is not the archive's ({archive.top})")
    deployment = documents.get("deployment.json")
    if isinstance(run, dict) and isinstance(deployment, dict):
        if deployment.get("id") != run.get("id"):
            problems.append("deployment.json: its id differs from the run id in run.json")
        public = json.dumps(deployment)
        if "PRIVATE KEY" in public:
            problems.append("deployment.json: holds a private key")
    store = documents.get("store-paths.json")
    if isinstance(store, dict):
        listed = {str(p.get("path")) for p in store.get("paths", [])}
        for root in store.get("roots", []):
            if root not in listed:
                problems.append(f"store-paths.json: root {root} is not among the listed paths")
        for item in store.get("paths", []):
            for ref in item.get("references", []):
                if ref not in listed:
                    problems.append(
                        f"store-paths.json: {item.get('path')} refers to {ref}, which is not listed"
                    )
        for artifact in store.get("artifacts", []):
            if artifact.get("store_path") and artifact["store_path"] not in listed:
                problems.append(
                    f"store-paths.json: {artifact.get('role')} {artifact.get('kind')} lies in "
                    f"{artifact['store_path']}, which is not listed"
                )


def verify(path: Path, digest: str | None = None) -> VerifyReport:
    """Check everything :mod:`nxc.records.verify` describes; problems in the report.

    Raises :class:`VerifyError` only when the file is not an nxc archive at all.
    """
    archive = open_archive(path)
    report = VerifyReport(path, run_id=archive.top)
    problems = report.problems
    try:
        for name in archive.outside:
            problems.append(f"{name}: outside the archive's top directory {archive.top}/")
        sums_bytes = archive.read(SUMS)
        report.digest = hashlib.sha256(sums_bytes).hexdigest()
        comment = archive.zip.comment.decode(errors="replace").strip()
        match = _COMMENT.match(comment)
        if match is None:
            problems.append(f"{SUMS}: the archive has no nxc digest in its ZIP comment")
        elif match.group(1) != report.digest:
            problems.append(
                f"{SUMS}: its SHA-256 ({report.digest[:16]}…) differs from the archive digest "
                f"({match.group(1)[:16]}…): {SUMS} was altered"
            )
        if digest is not None and digest.lower() != report.digest:
            problems.append(
                f"{SUMS}: the archive digest is {report.digest}, not the expected {digest.lower()}"
            )
        listed, sum_problems = parse_sums(sums_bytes)
        problems += sum_problems
        for name in REQUIRED:
            if name not in archive.members:
                problems.append(f"{name}: missing from the archive")
        crate_hashes = _crate_hashes(archive, problems) if CRATE in archive.members else {}
        store_doc: Any = None
        if "store-paths.json" in archive.members:
            try:
                store_doc = archive.json("store-paths.json")
            except (ValueError, zipfile.BadZipFile, zlib.error):
                store_doc = None
        for name in sorted(archive.members):
            if name == SUMS:
                continue
            try:
                with archive.open(name) as stream:
                    tee = _Tee(stream)
                    for finding in secrets.scan_stream(tee, name):  # type: ignore[arg-type]
                        problems.append(f"{finding}: archives must hold no secret")
                actual = tee.hasher.hexdigest()
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                problems.append(f"{name}: damaged in the archive ({exc})")
                continue
            report.files += 1
            expected = listed.get(name)
            if expected is None:
                problems.append(f"{name}: not listed in {SUMS}")
            elif actual != expected:
                if crate_hashes.get(name) == actual:
                    problems.append(
                        f"{SUMS}: the entry for {name} is wrong ({name} matches {CRATE}): "
                        f"{SUMS} was altered"
                    )
                else:
                    problems.append(f"{name}: content differs from its SHA-256 in {SUMS}")
            if name == CLOSURE:
                with archive.open(name) as stream:
                    closure_problems, report.closure_paths = check_closure(stream, store_doc)
                problems += closure_problems
        report.files += 1  # SHA256SUMS itself
        for name in sorted(set(listed) - set(archive.members)):
            problems.append(f"{name}: listed in {SUMS} but missing from the archive")
        documents = _check_documents(archive, problems)
        _cross_check(archive, documents, problems)
    finally:
        archive.close()
    return report
