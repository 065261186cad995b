"""Driver round trip over the ssh transport vs a new ssh process per command.

One real sshd node in a network namespace (tests/fixtures/sshd_netns.py). The driver's
`Machine.succeed("true")` over SshNodeControl reuses one asyncssh connection (one
channel per command); the baseline starts `ssh -F CONFIG NODE true` for every command,
as the reference tool does.

    python bench/ssh_rtt.py [DRIVER_N] [SSH_N]       (default: 200 50)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import fmt, median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' sshd lab

from nxc.driver.machine import Machine
from nxc.log import Level, Logger
from nxc.transports.ssh import SshNodeControl, SshSettings, SshTransport
from tests.fixtures.sshd_netns import SshdCluster


def timed(action: object, count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        action()  # type: ignore[operator]
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    driver_n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    ssh_n = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    with (
        tempfile.TemporaryDirectory(prefix="nxc-bench-ssh-") as workdir,
        SshdCluster(Path(workdir), 1) as cluster,
    ):
        name = cluster.nodes[0].name
        settings = SshSettings(cluster.known_hosts, cluster.ssh_config)
        with SshTransport(name, settings) as transport:
            machine = Machine(
                "node1", "node", 1, SshNodeControl(transport), Logger(level=Level.ERROR)
            )
            machine.succeed("true")  # connect once, outside the measurement
            driver = timed(lambda: machine.succeed("true"), driver_n)
            raw = timed(lambda: transport.run("true"), driver_n)
        argv = ["ssh", "-F", str(cluster.ssh_config), name, "true"]
        ssh = timed(lambda: subprocess.run(argv, check=True, stdin=subprocess.DEVNULL), ssh_n)
        kex = ["-o", "KexAlgorithms=curve25519-sha256"]
        argv_kex = [*argv[:3], *kex, *argv[3:]]
        ssh_kex = timed(
            lambda: subprocess.run(argv_kex, check=True, stdin=subprocess.DEVNULL), ssh_n
        )
    a, r, b, c = median(driver), median(raw), median(ssh), median(ssh_kex)
    print("command round trip (`true`), one sshd node in a network namespace:")
    print(f"  driver Machine.succeed over ssh, median of {driver_n}: {fmt(a)}")
    print(f"  SshTransport.run (no driver),    median of {driver_n}: {fmt(r)}")
    print(f"  new ssh process,                 median of {ssh_n}: {fmt(b)}")
    print(f"  new ssh process, curve25519 kex, median of {ssh_n}: {fmt(c)}")
    print(f"  speed-up of the driver: {b / a:.1f}x (default ssh), {c / a:.1f}x (curve25519)")
    print("  goal >= 20x")


if __name__ == "__main__":
    main()
