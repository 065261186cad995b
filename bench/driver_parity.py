"""Cost of running scenario commands as the NixOS test driver does, on one selftest VM.

`Machine.succeed` wraps each command (cd /tmp, bash with `set -euo pipefail`, stdout
through a FIFO so that background jobs' output is kept, at most `background_grace`
seconds); `Machine.run` sends the bare text with `sh -c`. Both run `true` on the same
node over the same backdoor channel; the ratio is the price of NixOS semantics.

    python bench/driver_parity.py [N]
"""

from __future__ import annotations

import sys
import time

from _common import fmt, median, nxc, selftest_project

from nxc.driver.session import open_driver
from nxc.monitor.hook import MonitorOptions
from nxc.project import Project
from nxc.session import running


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    project = selftest_project()
    nxc("start", "-r", "node=1", cwd=project)
    try:
        current = running(Project(project))
        with open_driver(current, monitor=MonitorOptions(enabled=False)) as driver:
            node = driver.machines[0]
            node.succeed("true")  # connect and probe bash once, outside the measurement
            raw, wrapped = [], []
            for _ in range(n):  # interleaved: both see the same machine load
                begin = time.perf_counter()
                node.run("true")
                raw.append(time.perf_counter() - begin)
                begin = time.perf_counter()
                node.succeed("true")
                wrapped.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            node.succeed("(sleep 1; echo late) & echo early")
            background = time.perf_counter() - begin
    finally:
        nxc("stop", cwd=project)
    a, b = median(raw), median(wrapped)
    print(f"command round trip (`true`), one TCG VM, median of {n}:")
    print(f"  Machine.run (bare sh -c):             {fmt(a)}")
    print(f"  Machine.succeed (NixOS semantics):    {fmt(b)}  ({b / a:.1f}x)")
    print(f"  succeed with a 1 s background writer: {fmt(background)}")


if __name__ == "__main__":
    main()
