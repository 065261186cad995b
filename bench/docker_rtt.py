"""Driver round trip over `docker exec`: `succeed("true")` on one container.

Side by side on the same container: the driver's Machine (nxc's transport: one exec
through the persistent SDK client, output through files, status), the transport alone,
and the bare SDK calls a plain script would make (exec_create, exec_start,
exec_inspect). The daemon is a private dockerd nxc starts for the run.

    python bench/docker_rtt.py [N]
"""

from __future__ import annotations

import sys
import time

from _common import fmt, median, nxc, selftest_project

from nxc.driver.session import open_driver
from nxc.project import Project
from nxc.session import running


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    project = selftest_project()
    nxc("build", "-f", "docker", "--offline", cwd=project)
    nxc("start", "-f", "docker", "--dockerd", "private", "-r", "node=1", cwd=project)
    try:
        current = running(Project(project))
        with open_driver(current) as driver:
            machine = driver.machines[0]
            machine.succeed("true")  # outside the measurement
            driver_times = []
            for _ in range(count):
                begin = time.perf_counter()
                machine.succeed("true")
                driver_times.append(time.perf_counter() - begin)
        control = current.nodes()[current.deployment.nodes[0].name]
        transport = control.transport()
        transport_times = []
        for _ in range(count):
            begin = time.perf_counter()
            transport.run("true")
            transport_times.append(time.perf_counter() - begin)
        api = control.api  # type: ignore[attr-defined]
        container = control.container  # type: ignore[attr-defined]
        bare = []
        for _ in range(count):
            begin = time.perf_counter()
            created = api.exec_create(container, ["/bin/sh", "-c", "true"])
            api.exec_start(created["Id"])
            api.exec_inspect(created["Id"])
            bare.append(time.perf_counter() - begin)
    finally:
        nxc("stop", cwd=project)
    print(f"command round trip (`true`) over docker exec, one container, median of {count}:")
    print(f"  driver Machine.succeed:       {fmt(median(driver_times))}")
    print(f"  DockerExecTransport.run:      {fmt(median(transport_times))}")
    print(f"  bare SDK create/start/inspect: {fmt(median(bare))}")


if __name__ == "__main__":
    main()
