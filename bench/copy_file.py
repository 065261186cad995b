"""Copy a file to a VM and back through the driver (copy_to_machine / copy_from_machine).

    python bench/copy_file.py [MEGABYTES]      (default 20)

Starts one selftest VM, copies a random file of that size to it and back, checks the
bytes and prints both times and throughputs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _common import fmt, nxc, selftest_project

from nxc.driver.session import open_driver
from nxc.project import Project
from nxc.session import running


def main() -> None:
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    project = selftest_project()
    nxc("start", "-r", "node=1", cwd=project)
    try:
        current = running(Project(project))
        with tempfile.TemporaryDirectory(prefix="nxc-bench-copy-") as tmp:
            source = Path(tmp) / "payload.bin"
            source.write_bytes(os.urandom(megabytes * 1024 * 1024))
            with open_driver(current) as driver:
                node = driver.machines[0]
                node.out_dir = Path(tmp) / "back"
                node.succeed("true")  # connect once, outside the measurement
                begin = time.perf_counter()
                node.copy_to_machine(source, "/tmp/payload.bin")
                upload = time.perf_counter() - begin
                begin = time.perf_counter()
                back = node.copy_from_machine("/tmp/payload.bin")
                download = time.perf_counter() - begin
            if back.read_bytes() != source.read_bytes():
                raise SystemExit("the copy came back different")
    finally:
        nxc("stop", cwd=project)
    print(f"copy of {megabytes} MB, one VM:")
    print(f"  copy_to_machine:   {fmt(upload)} ({megabytes / upload:.1f} MB/s)")
    print(f"  copy_from_machine: {fmt(download)} ({megabytes / download:.1f} MB/s)")


if __name__ == "__main__":
    main()
