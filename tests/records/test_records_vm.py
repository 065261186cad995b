"""Run records, publish, verify and reproduce on a real 3-node selftest run (QEMU).

One run serves every test (see conftest.py): started with a --netem topology and
the composition's testScript, then a second driver session validating the network,
then stopped. Reproducing boots 3 VMs again, after that run has stopped.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from nxc.contracts import Manifest
from nxc.project import Project
from nxc.records.secrets import scan_stream
from nxc.runs import RunRecord
from tests.conftest import run_nxc
from tests.records.conftest import VALIDATE_SCENARIO, Archives, FinishedRun, read_json

pytestmark = [pytest.mark.vm, pytest.mark.nix]

NIX = ["nix", "--extra-experimental-features", "nix-command flakes"]


def test_run_json_holds_the_run(finished_run: FinishedRun) -> None:
    run = RunRecord(finished_run.run_dir).load()  # validated against run-1.json
    assert run["status"] == "stopped" and run["id"] == finished_run.run_id
    assert run["composition"] == "selftest" and run["flavour"] == "vm-ramdisk"
    assert run["nodes"] == ["node1", "node2", "node3"]
    assert run["request"] == {
        "roles": {"node": 3},
        "options": {},
        "ready_timeout": 180.0,
        "netem": "netem-topology.json",
        "composition_topology": True,
    }
    assert [c["what"] for c in run["commands"]] == ["start", "driver", "driver", "stop"]
    assert run["commands"][0]["argv"][1:4] == ["start", "-r", "node=3"]
    assert run["commands"][2]["argv"][1] == "driver"
    assert run["commands"][2]["argv"][2].endswith("validate.py")
    phases = {p["name"]: p for p in run["phases"]}
    assert list(phases) == ["check", "record", "expand", "acquire", "launch", "ready", "netem"]
    assert all(p["ok"] for p in phases.values())
    # Booting dominates under TCG; each phase is timed on its own.
    assert phases["ready"]["duration"] > phases["launch"]["duration"] > 0
    assert phases["netem"]["duration"] > 0
    host = run["host"]
    assert host["cores"] >= 1 and host["memory_mb"] > 0 and host["kernel"]
    assert host["cpu_model"] and host["nix_version"]
    assert host["accelerator"] == run["facts"]["accelerator"] in ("kvm", "tcg")
    builds = Project(finished_run.project_dir).builds()["vm-ramdisk"]
    assert run["build"]["out_path"] == builds["out_path"]
    assert run["build"]["command"][1:] == ["build", "--offline"]
    assert run["nxc_version"]


def test_build_inputs_and_store_paths(finished_run: FinishedRun) -> None:
    run_dir, project_dir = finished_run.run_dir, finished_run.project_dir
    lock = read_json(run_dir / "flake.lock")
    assert lock == read_json(project_dir / "flake.lock")
    inputs = read_json(run_dir / "inputs.json")
    assert isinstance(lock, dict) and isinstance(inputs, dict)
    (nxc_input,) = [i for i in inputs["inputs"] if i["name"] == "nxc"]
    assert nxc_input["nar_hash"] == lock["nodes"]["nxc"]["locked"]["narHash"]
    assert nxc_input["locked"] == lock["nodes"]["nxc"]["locked"]
    for name in ("flake.nix", "composition.nix", "test.py"):
        assert (run_dir / "source" / name).read_bytes() == (project_dir / name).read_bytes()
    store = read_json(run_dir / "store-paths.json")
    assert isinstance(store, dict)
    manifest = Manifest.load(run_dir / "manifest.json")
    out_path = str(Path(RunRecord(run_dir).load()["build"]["out_path"]))
    assert store["roots"][0] == out_path
    # Every store path with the NAR hash nix itself reports, asked independently.
    described = json.loads(
        subprocess.run(
            [*NIX, "path-info", "--json", "--recursive", out_path],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert {p["path"]: p["narHash"] for p in store["paths"]} == {
        d["path"]: d["narHash"] for d in described
    }
    kinds = {(a["role"], a["kind"]): a for a in store["artifacts"]}
    role = manifest.roles["node"]
    assert kinds[("node", "kernel")]["path"] == str(role.kernel)
    assert kinds[("node", "initrd")]["store_path"] in {p["path"] for p in store["paths"]}


def test_deployment_logs_and_driver_sessions(finished_run: FinishedRun) -> None:
    run_dir = finished_run.run_dir
    deployment = (run_dir / "deployment.json").read_text()
    assert "PRIVATE" not in deployment
    nodes = json.loads(deployment)["nodes"]
    assert [n["name"] for n in nodes] == ["node1", "node2", "node3"]
    assert all(n["host_key"].startswith("ssh-ed25519 ") for n in nodes)
    for name in ("node1", "node2", "node3"):
        console = (run_dir / "nodes" / f"{name}.console.log").read_text(errors="replace")
        assert f"nxc-ready node={name} " in console
    run = RunRecord(run_dir).load()
    assert run["logs"]["node1"]["console"] == "nodes/node1.console.log"
    # The selftest images have no systemd: the record says so instead of a journal.
    assert run["logs"]["node2"]["journal"] == "none: the node has no systemd journal"
    topology = read_json(run_dir / "netem-topology.json")
    assert isinstance(topology, dict) and topology["constraints"][0]["delay"] == "50ms"

    first, second = RunRecord(run_dir).driver_dirs()
    manifest = Manifest.load(run_dir / "manifest.json")
    assert (first / "scenario.py").read_text() == manifest.test_script
    report = read_json(first / "report.json")
    assert isinstance(report, dict) and report["success"] and report["script"] == "testScript"
    assert len(report["subtests"]) == 6
    cases = {c.get("name") for c in ET.parse(first / "report.xml").getroot().iter("testcase")}
    assert {s["name"] for s in report["subtests"]} <= cases
    log = [json.loads(line) for line in (first / "log.jsonl").read_text().splitlines()]
    assert any(r["msg"] == "running testScript" for r in log)
    assert (second / "scenario.py").read_text() == VALIDATE_SCENARIO
    validation = read_json(second / "netem-validation-1.json")
    assert isinstance(validation, dict) and validation["nxc_netem_validation"] == 1
    assert validation["ok"] is True
    delayed = [p for p in validation["pairs"] if {p["src"], p["dst"]} == {"node1", "node2"}]
    assert delayed and delayed[0]["rtt_median_ms"] >= 80


def test_runs_lists_and_shows(finished_run: FinishedRun) -> None:
    result = run_nxc("runs", "--json", cwd=finished_run.project_dir)
    assert result.returncode == 0, result.stderr
    rows = {r["id"]: r for r in json.loads(result.stdout)}
    row = rows[finished_run.run_id]
    assert (row["status"], row["nodes"], row["flavour"]) == ("stopped", 3, "vm-ramdisk")
    assert row["duration"] > 0
    table = run_nxc("runs", cwd=finished_run.project_dir)
    assert finished_run.run_id in table.stdout and "stopped" in table.stdout
    show = run_nxc("runs", "show", finished_run.run_id[:-2], cwd=finished_run.project_dir)
    assert show.returncode == 0, show.stderr
    text = show.stdout
    assert f"run {finished_run.run_id}: selftest on vm-ramdisk, stopped" in text
    for phase in ("check", "record", "expand", "acquire", "launch", "ready", "netem"):
        assert f"\n  {phase} " in text
    assert "testScript: PASSED" in text and "6/6 subtests" in text
    assert "validate.py: PASSED" in text
    assert f"files in {finished_run.run_dir}" in text
    assert "nodes/node1.console.log" in text


def test_publish_then_verify(archives: Archives, finished_run: FinishedRun) -> None:
    for archive, digest in (
        (archives.plain, archives.digest_plain),
        (archives.closure, archives.digest_closure),
    ):
        result = run_nxc("verify", str(archive), "--digest", digest)
        assert result.returncode == 0, result.stderr
        assert f"run {finished_run.run_id}" in result.stdout
        with zipfile.ZipFile(archive) as handle:
            sums = handle.read(f"{finished_run.run_id}/SHA256SUMS")
            assert hashlib.sha256(sums).hexdigest() == digest
            names = set(handle.namelist())
        for member in ("README.md", "CITATION.cff", "ro-crate-metadata.json", "run.json"):
            assert f"{finished_run.run_id}/{member}" in names
    assert "2 store paths in the closure match" in run_nxc("verify", str(archives.closure)).stdout
    wrong = run_nxc("verify", str(archives.plain), "--digest", archives.digest_closure)
    assert wrong.returncode == 1 and "not the expected" in wrong.stderr


def test_publishing_twice_gives_the_same_bytes(
    archives: Archives, finished_run: FinishedRun, tmp_path: Path
) -> None:
    again = tmp_path / archives.plain.name  # the README names the archive
    result = run_nxc(
        "publish", finished_run.run_id, "-o", str(again),
        "--author", "Lovelace, Ada", "--license", "CC-BY-4.0",
        cwd=finished_run.project_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert again.read_bytes() == archives.plain.read_bytes()


def test_readme_citation_and_crate(archives: Archives, finished_run: FinishedRun) -> None:
    import yaml
    from rocrate.rocrate import ROCrate

    top = finished_run.run_id
    with zipfile.ZipFile(archives.closure) as handle:
        readme = handle.read(f"{top}/README.md").decode()
        citation = yaml.safe_load(handle.read(f"{top}/CITATION.cff"))
        crate_json = json.loads(handle.read(f"{top}/ro-crate-metadata.json"))
        sums = dict(
            reversed(line.split("  ", 1))
            for line in handle.read(f"{top}/SHA256SUMS").decode().splitlines()
        )
    assert f"nxc reproduce {archives.closure.name}" in readme
    assert f"nix-store --import < {top}/closure.nar" in readme
    assert "-r node=3 --netem netem-topology.json" in readme
    assert f"nxc driver -p experiment {top}/driver/" in readme
    assert "testScript: PASSED" in readme
    assert citation["cff-version"] == "1.2.0" and citation["version"] == top
    crate = ROCrate(crate_json)
    files = {e.id: e for e in crate.data_entities}
    assert files["closure.nar"]["sha256"] == sums["closure.nar"]
    assert files["run.json"]["sha256"] == sums["run.json"]
    (action,) = [e for e in crate.contextual_entities if e.type == "CreateAction"]
    assert action["instrument"].id.startswith("#nxc-")


# Member files whose flipped byte verify must name (the closure included).
FLIPPED = [
    "run.json",
    "manifest.json",
    "deployment.json",
    "store-paths.json",
    "nodes/node1.console.log",
    "source/composition.nix",
    "README.md",
    "ro-crate-metadata.json",
    "SHA256SUMS",
    "closure.nar",
]


def _rewrite(archive: Path, target: Path, member: str, offset_of: float = 0.5) -> None:
    """A copy of ``archive`` with one byte of ``member`` flipped (comment kept)."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.split("/", 1)[1] == member:
                position = int(len(data) * offset_of)
                data = data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]
            out.writestr(info, data)
        out.comment = source.comment


@pytest.mark.parametrize("member", FLIPPED)
def test_one_flipped_byte_is_named(archives: Archives, tmp_path: Path, member: str) -> None:
    tampered = tmp_path / "tampered.zip"
    _rewrite(archives.closure, tampered, member)
    result = run_nxc("verify", str(tampered))
    assert result.returncode == 1
    problems = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert problems, result.stderr
    assert all(p.startswith(f"{member}:") or f" {member}" in p for p in problems), problems
    assert result.stderr.splitlines()[-1].startswith("nxc: error: ")


def test_closure_byte_names_the_store_path(archives: Archives, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered.zip"
    _rewrite(archives.closure, tampered, "closure.nar", 0.9)  # inside the initrd's NAR
    result = run_nxc("verify", str(tampered))
    assert result.returncode == 1
    assert "closure.nar: content differs from its SHA-256 in SHA256SUMS" in result.stderr
    assert "-nxc-selftest-selftest-node: NAR hash differs from store-paths.json" in result.stderr


def test_a_byte_flipped_in_the_zip_itself(archives: Archives, tmp_path: Path) -> None:
    """Damage to the archive file (not a repacked member) is named too."""
    with zipfile.ZipFile(archives.closure) as handle:
        info = next(i for i in handle.infolist() if i.filename.endswith("/closure.nar"))
    data = bytearray(archives.closure.read_bytes())
    # The member's data follows its local header: 30 bytes, then its name and extra
    # field, whose lengths the header holds at offsets 26 and 28.
    local = info.header_offset
    name_length, extra_length = struct.unpack("<HH", data[local + 26 : local + 30])
    start = local + 30 + name_length + extra_length
    data[start + info.compress_size // 2] ^= 0x40
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    result = run_nxc("verify", str(damaged))
    assert result.returncode == 1
    assert "closure.nar: " in result.stderr


def test_archives_hold_no_key_material(archives: Archives, finished_run: FinishedRun) -> None:
    assert finished_run.key_lines
    for archive in (archives.plain, archives.closure):
        with zipfile.ZipFile(archive) as handle:
            for info in handle.infolist():
                data = handle.read(info)
                assert scan_stream(io.BytesIO(data), info.filename) == []
                for line in finished_run.key_lines:
                    assert line not in data, f"{info.filename} holds a deployment key"


def test_publish_refuses_a_record_with_a_key(finished_run: FinishedRun, tmp_path: Path) -> None:
    copy = tmp_path / finished_run.run_id
    shutil.copytree(finished_run.run_dir, copy)
    log = next(copy.glob("driver/*/log.jsonl"))
    key = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
        capture_output=True, check=True,
    )  # fmt: skip
    assert key.returncode == 0
    with open(log, "ab") as handle:
        handle.write(b'{"msg": "oops"}\n' + (tmp_path / "k").read_bytes())
    out = tmp_path / "leak.zip"
    result = run_nxc("publish", str(copy), "-o", str(out), cwd=finished_run.project_dir)
    assert result.returncode == 1
    first = next(line for line in result.stderr.splitlines() if line.startswith("nxc: "))
    assert first.startswith("nxc: error: refusing to publish: driver/")
    assert "log.jsonl: a private key block at line" in first
    assert not out.exists() and not list(tmp_path.glob(".leak.zip*"))


def test_reproduce_starts_the_same_deployment(
    archives: Archives, finished_run: FinishedRun, tmp_path: Path
) -> None:
    target = tmp_path / "again"
    result = run_nxc("reproduce", str(archives.closure), "-d", str(target), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the same images, from the closure" in result.stdout
    assert "testScript: PASSED (originally PASSED" in result.stdout
    assert "validate.py: PASSED (originally PASSED" in result.stdout
    project = Project(target)
    (run_dir,) = [p for p in project.runs_dir.iterdir()]
    run = RunRecord(run_dir).load()
    assert run["status"] == "stopped"
    assert run["reproduces"]["run"] == finished_run.run_id
    assert run["reproduces"]["archive_digest"] == archives.digest_closure
    assert run["request"]["roles"] == {"node": 3} and run["request"]["netem"]
    old = json.loads((finished_run.run_dir / "deployment.json").read_text())
    new = json.loads((run_dir / "deployment.json").read_text())
    keys = ("name", "role", "index", "ipv4", "ipv6", "mac")
    assert [{k: n[k] for k in keys} for n in old["nodes"]] == [
        {k: n[k] for k in keys} for n in new["nodes"]
    ]
    assert (run_dir / "netem-topology.json").read_text() == (
        finished_run.run_dir / "netem-topology.json"
    ).read_text()
    sessions = RunRecord(run_dir).driver_dirs()
    assert len(sessions) == 2
    assert all(json.loads((s / "report.json").read_text())["success"] for s in sessions)
    assert (sessions[1] / "netem-validation-1.json").is_file()
