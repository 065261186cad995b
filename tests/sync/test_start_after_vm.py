"""Declarative start order on selftest VMs: the ring template's order (clients after
every server signalled ring-connected) expressed with `start_after` in a selftest
composition, run for real: the client's startup runs only after both servers' signals,
and one server comes up late on purpose."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc.project import Project
from nxc.session import running
from tests.conftest import run_nxc
from tests.e2e.conftest import require_host_tools

pytestmark = pytest.mark.vm

COMPOSITION = """\
# The ring template's start order on selftest images: servers signal
# ring-connected once they serve; the client starts after every server did.
{ ... }:
{
  roles.server = {
    quantity = 2;
    resources.memory_mb = 256;
    startup = ''
      . /etc/nxc/env
      mkdir -p /srv && echo "$NXC_NODE" > /srv/index.html
      busybox httpd -p 80 -h /srv
      # server2 is late on purpose: the client must wait for it.
      if [ "$NXC_INDEX" = 2 ]; then sleep 4; fi
      nxc-sync signal ring-connected
    '';
  };
  roles.client = {
    quantity = 1;
    resources.memory_mb = 256;
    start_after = { state = "ring-connected"; count = "server"; timeout = 300; };
    startup = ''
      nxc-sync signal client-started
      for s in server1 server2; do wget -q -T 5 -O - http://$s/index.html >> /tmp/seen; done
    '';
  };
}
"""


@pytest.fixture(scope="module")
def ordered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    require_host_tools()
    directory = tmp_path_factory.mktemp("start-after")
    result = run_nxc("init", "-t", "selftest", str(directory))
    assert result.returncode == 0, result.stderr
    (directory / "composition.nix").write_text(COMPOSITION)
    result = run_nxc("build", "--offline", cwd=directory)
    assert result.returncode == 0, result.stderr
    result = run_nxc("start", cwd=directory)
    try:
        assert result.returncode == 0, result.stderr
        yield directory
    finally:
        run_nxc("stop", cwd=directory)


def test_client_starts_after_every_server(ordered: Path) -> None:
    from nxc.driver.session import machines_of

    current = running(Project(ordered))
    with current.sync().client("test") as sync:
        sync.barrier("client-started", 1, timeout=180)
        connected = sync.arrivals("ring-connected")
        started = sync.arrivals("client-started")
    assert sorted(who for who, _ in connected) == ["server1", "server2"]
    assert started[0][0] == "client1"
    assert started[0][1] >= max(t for _, t in connected), (connected, started)
    machines = {m.name: m for m in machines_of(current)}
    try:
        client = machines["client1"]
        client.wait_until_succeeds("test $(wc -l < /tmp/seen) -eq 2", timeout=60)
        assert client.succeed("cat /tmp/seen").split() == ["server1", "server2"]
        assert "waiting for 2 signal(s) of ring-connected" in client.succeed(
            "cat /run/nxc/sync.log"
        )
        # The servers had nothing to wait for.
        assert machines["server1"].succeed("cat /run/nxc/sync.log") == ""
    finally:
        for machine in machines.values():
            machine.release()
