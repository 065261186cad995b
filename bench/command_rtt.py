"""Driver command round trip vs one new ssh process per command, into the same VM.

The reference tool runs each scenario command as a fresh ssh process; nxc's driver
keeps one backdoor channel per VM. Both run `true` on the same node. The driver also
runs a two-line command, which cannot travel in the backdoor's raw one-line form (it
was base64-decoded by the guest's shell in protocol 1, a byte-counted payload read by
the shell's `read -n` in protocol 2).

    python bench/command_rtt.py [BACKDOOR_N] [SSH_N]
"""

from __future__ import annotations

import subprocess
import sys
import time

from _common import fmt, median, nxc, selftest_project

from nxc.driver.session import open_driver
from nxc.monitor.hook import MonitorOptions
from nxc.project import Project
from nxc.session import running


def main() -> None:
    backdoor_n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    ssh_n = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    project = selftest_project()
    nxc("start", "-r", "node=1", cwd=project)
    try:
        current = running(Project(project))
        # No background scraping: its commands would share the channel being measured.
        with open_driver(current, monitor=MonitorOptions(enabled=False)) as driver:
            node = driver.machines[0]
            node.succeed("true")  # connect once, outside the measurement
            backdoor = []
            for _ in range(backdoor_n):
                begin = time.perf_counter()
                node.succeed("true")
                backdoor.append(time.perf_counter() - begin)
            two_lines = []
            for _ in range(backdoor_n):
                begin = time.perf_counter()
                node.succeed("true\ntrue")
                two_lines.append(time.perf_counter() - begin)
        argv = current.ssh_argv(current.deployment.nodes[0].name)
        ssh = []
        for _ in range(ssh_n):
            begin = time.perf_counter()
            subprocess.run([*argv, "true"], check=True, capture_output=True)
            ssh.append(time.perf_counter() - begin)
    finally:
        nxc("stop", cwd=project)
    a, b = median(backdoor), median(ssh)
    print("command round trip (`true`), one VM:")
    print(f"  driver backdoor, median of {backdoor_n}: {fmt(a)}")
    print(f"  driver backdoor, two-line command, median of {backdoor_n}: {fmt(median(two_lines))}")
    print(f"  new ssh process,  median of {ssh_n}: {fmt(b)}")
    print(f"  speed-up: {b / a:.1f}x  (goal >= 20x)")


if __name__ == "__main__":
    main()
