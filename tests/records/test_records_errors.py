"""Bad input to runs/publish/verify: one-line errors, never a traceback, and a
record built here (no VM) publishes and verifies."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from nxc.errors import StateError
from nxc.project import Project
from nxc.records.publish import PublishError, publish
from nxc.records.summary import show_lines
from nxc.runs import PhaseClock, RunRecord, find_run
from tests.conftest import run_nxc, sample_manifest


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "exp"
    root.mkdir()
    (root / "flake.nix").write_text("{ outputs = _: { }; }\n")
    return Project(root)


def _record(project: Project, tmp_path: Path, status: str = "stopped") -> RunRecord:
    project.ensure_state_dir()
    record = RunRecord.create(project, "demo-0a1b2c", "demo", "vm-ramdisk", roles={"server": 1})
    record.write_json("manifest.json", sample_manifest(tmp_path))
    clock = PhaseClock(record)
    with clock.phase("launch"):
        clock.begin("ready")
    if status != "starting":
        record.mark(status)
    return record


def _one_line_error(result: object) -> str:
    stderr = getattr(result, "stderr", "")
    assert getattr(result, "returncode", 0) == 1
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("nxc: error: ")
    return lines[0]


def test_phases_are_recorded_and_split(project: Project, tmp_path: Path) -> None:
    record = _record(project, tmp_path)
    phases = record.load()["phases"]
    assert [p["name"] for p in phases] == ["launch", "ready"]
    assert all(p["ok"] for p in phases)
    clock = PhaseClock(record)
    with pytest.raises(RuntimeError), clock.phase("acquire"):
        raise RuntimeError("no switch")
    assert record.load()["phases"][-1] == {
        **record.load()["phases"][-1],
        "name": "acquire",
        "ok": False,
        "error": "no switch",
    }


def test_run_json_is_checked_on_read(project: Project, tmp_path: Path) -> None:
    record = _record(project, tmp_path)
    document = json.loads(record.file.read_text())
    document["status"] = "exploded"
    record.file.write_text(json.dumps(document))
    with pytest.raises(StateError, match=r"run.json: status: 'exploded' is not one of"):
        record.load()
    result = run_nxc("runs", "show", "demo", cwd=project.root)
    assert "status: 'exploded' is not one of" in _one_line_error(result)


def test_grid5000_facts_are_shown(project: Project, tmp_path: Path) -> None:
    record = _record(project, tmp_path)
    record.update(
        grid5000={
            "jobs": [
                {"site": "rennes", "id": 1234567, "nodes": ["paravance-3.rennes.grid5000.fr"]}
            ],
            "sites": ["rennes"],
            "clusters": ["paravance"],
            "nodes": ["paravance-3.rennes.grid5000.fr"],
        }
    )
    text = "\n".join(show_lines(record, record.load()))
    assert "grid5000  jobs rennes:1234567" in text and "clusters paravance" in text
    with pytest.raises(Exception, match=r"grid5000\.jobs\.0: 'id' is a required property"):
        record.update(grid5000={"jobs": [{"site": "rennes"}]})


def test_missing_and_ambiguous_runs(project: Project, tmp_path: Path) -> None:
    _record(project, tmp_path)
    assert "no run 'nosuch' in" in _one_line_error(
        run_nxc("runs", "show", "nosuch", cwd=project.root)
    )
    assert "no run 'nosuch'" in _one_line_error(run_nxc("publish", "nosuch", cwd=project.root))
    RunRecord.create(project, "demo-0a9999", "demo", "vm-ramdisk")
    with pytest.raises(StateError, match="ambiguous"):
        find_run(project, "demo-0a")
    assert find_run(project, "demo-0a1").id == "demo-0a1b2c"


def test_a_running_run_is_not_published(project: Project, tmp_path: Path) -> None:
    record = _record(project, tmp_path, status="running")
    with pytest.raises(PublishError, match="still running: stop it first"):
        publish(record, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_publish_and_verify_without_nix(project: Project, tmp_path: Path) -> None:
    record = _record(project, tmp_path)
    out = tmp_path / "demo.zip"
    result = run_nxc("publish", "demo-0a1b2c", "-o", str(out), cwd=project.root)
    assert result.returncode == 0, result.stderr
    assert "CITATION.cff names 'Unknown'" in result.stderr
    verified = run_nxc("verify", str(out))
    assert verified.returncode == 0, verified.stderr
    assert "verified" in verified.stdout and record.id in verified.stdout


@pytest.fixture
def archive(project: Project, tmp_path: Path) -> Path:
    out = tmp_path / "demo.zip"
    publish(_record(project, tmp_path), out)
    return out


def test_corrupt_or_missing_archives(archive: Path, tmp_path: Path) -> None:
    missing = _one_line_error(run_nxc("verify", str(tmp_path / "nope.zip")))
    assert missing == f"nxc: error: {tmp_path / 'nope.zip'}: no such file"
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip archive at all" * 10)
    assert "not a readable ZIP archive" in _one_line_error(run_nxc("verify", str(junk)))
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    assert "not a readable ZIP archive" in _one_line_error(run_nxc("verify", str(truncated)))
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as handle:
        handle.writestr("a/b.txt", "x")
    assert "SHA256SUMS is missing" in _one_line_error(run_nxc("verify", str(other)))
    # reproduce says what it is doing first, then fails with the same one line
    result = run_nxc("reproduce", str(other), "-d", str(tmp_path / "r"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("(a/SHA256SUMS is missing)")
    assert not (tmp_path / "r").exists()


def _rewritten(archive: Path, target: Path, member: str, data: bytes | None) -> Path:
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            if info.filename.split("/", 1)[1] == member:
                if data is not None:
                    out.writestr(info, data)
                continue
            out.writestr(info, source.read(info))
        out.comment = source.comment
    return target


def test_tampered_checksum_manifest(archive: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(archive) as handle:
        sums = handle.read("demo-0a1b2c/SHA256SUMS").decode()
    garbled = sums.replace("  run.json", " run.json\tgarbage", 1).encode()
    result = run_nxc("verify", str(_rewritten(archive, tmp_path / "g.zip", "SHA256SUMS", garbled)))
    assert result.returncode == 1
    problems = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert any(p.startswith("SHA256SUMS line ") and "malformed" in p for p in problems), problems
    assert any(p.startswith("SHA256SUMS: its SHA-256") for p in problems)
    assert "run.json: not listed in SHA256SUMS" in problems
    # A hash changed to another valid one: the crate shows SHA256SUMS is the culprit.
    line = next(x for x in sums.splitlines() if x.endswith("  manifest.json"))
    changed = sums.replace(line, "0" * 64 + "  manifest.json").encode()
    result = run_nxc("verify", str(_rewritten(archive, tmp_path / "c.zip", "SHA256SUMS", changed)))
    assert "SHA256SUMS: the entry for manifest.json is wrong" in result.stderr
    assert "manifest.json: content differs" not in result.stderr
    dropped = run_nxc("verify", str(_rewritten(archive, tmp_path / "d.zip", "run.json", None)))
    assert "run.json: listed in SHA256SUMS but missing from the archive" in dropped.stderr
    assert "run.json: missing from the archive" in dropped.stderr
    assert dropped.stderr.strip().splitlines()[-1].startswith("nxc: error: ")
