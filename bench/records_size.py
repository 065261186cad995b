"""Size of a run record and of its published archive, with and without the closure,
for the 3-node selftest run (`nxc start -r node=3 -t`, then `nxc stop`).

Baselines side by side: a plain `tar czf` of the same record directory (what one
would do by hand) and the raw NAR size of the images' closure. Also timed: the
"record" phase of `nxc start` (what gathering inputs and store paths costs a
start), `nxc publish` and `nxc verify` with and without the closure.

    python bench/records_size.py
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from _common import fmt, nxc, selftest_project

from nxc.project import Project


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}" if unit != "B" else f"{size:.0f} B"
        size /= 1024
    return f"{size:.1f} TiB"


def timed(*args: str, cwd: Path) -> float:
    begin = time.monotonic()
    nxc(*args, cwd=cwd)
    return time.monotonic() - begin


def main() -> None:
    project_dir = selftest_project()
    project = Project(project_dir)
    started = nxc("start", "-r", "node=3", "-t", cwd=project_dir)
    match = re.search(r"runs/([a-z0-9-]+)/driver/", started.stderr)
    try:
        assert match, started.stderr
    finally:
        nxc("stop", cwd=project_dir)
    assert match is not None
    run_id = match.group(1)
    run_dir = project.runs_dir / run_id
    run = json.loads((run_dir / "run.json").read_text())
    record_phase = next(p["duration"] for p in run["phases"] if p["name"] == "record")
    store = json.loads((run_dir / "store-paths.json").read_text())
    nar_total = sum(p["narSize"] for p in store["paths"])

    print(f"run {run_id}: 3 nodes, selftest on vm-ramdisk")
    print(f"  'record' phase of nxc start: {fmt(record_phase)}")
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    print(f"  run record: {human(size_of(run_dir))} in {len(files)} files")
    for part in sorted(run_dir.iterdir()):
        print(f"    {part.name + ('/' if part.is_dir() else ''):<22} {human(size_of(part))}")

    with tempfile.TemporaryDirectory(prefix="nxc-bench-records-") as tmp:
        out = Path(tmp)
        begin = time.monotonic()
        subprocess.run(
            ["tar", "czf", str(out / "record.tar.gz"), "-C", str(run_dir.parent), run_id],
            check=True,
        )
        tar_time = time.monotonic() - begin
        plain_time = timed("publish", run_id, "-o", str(out / "plain.zip"), cwd=project_dir)
        closure_time = timed(
            "publish", run_id, "-o", str(out / "closure.zip"), "--with-closure", cwd=project_dir
        )
        verify_plain = timed("verify", str(out / "plain.zip"), cwd=project_dir)
        verify_closure = timed("verify", str(out / "closure.zip"), cwd=project_dir)
        tar_size = size_of(out / "record.tar.gz")
        plain, closure = size_of(out / "plain.zip"), size_of(out / "closure.zip")
        print(f"  baseline tar czf of the record: {human(tar_size)} in {fmt(tar_time)}")
        print(
            f"  nxc publish:                {human(plain)} in {fmt(plain_time)} "
            f"(x{plain / tar_size:.2f} the tar.gz: README, CITATION.cff, RO-Crate, SHA256SUMS)"
        )
        print(f"  images' closure (NAR):      {human(nar_total)} in {len(store['paths'])} paths")
        print(
            f"  nxc publish --with-closure: {human(closure)} in {fmt(closure_time)} "
            f"(x{closure / (tar_size + nar_total):.2f} of tar.gz + raw NAR)"
        )
        print(f"  nxc verify: {fmt(verify_plain)} without, {fmt(verify_closure)} with the closure")


if __name__ == "__main__":
    main()
