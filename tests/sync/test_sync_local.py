"""The sync service with local nodes: the real redis-server nxc starts, the real
nxc-sync under busybox sh (what selftest images run), the Python client and the
driver's ``sync``, all on one service."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from nxc.contracts import Deployment, Manifest
from nxc.driver.driver import Driver
from nxc.errors import ContractError, NxcError, WaitTimeout
from nxc.ledger import Ledger
from nxc.sync.client import SyncClient, SyncError, SyncTimeout, check_name
from nxc.sync.deploy import resolve_start_after
from nxc.sync.service import SyncService, start_service, stop_service
from tests.sync.conftest import NodeEnv


def nxc_sync(
    env: dict[str, str], *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [f"{env['PATH']}/sh", f"{env['PATH']}/nxc-sync", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_nodes_meet_at_a_barrier_without_the_driver(driver: Driver) -> None:
    # Each node's program signals and waits; the driver starts them and only reads
    # what they wrote (it never relays anything).
    for machine in driver.machines:
        machine.execute(
            "nxc-sync signal-and-wait meet 3 > seq && date +%s > released",
            check_output=False,
        )
    for machine in driver.machines:
        machine.wait_for_file("released", timeout=20)
    seqs = sorted(int(m.succeed("cat seq")) for m in driver.machines)
    assert seqs == [1, 2, 3]
    arrivals = driver.sync.arrivals("meet")
    assert sorted(who for who, _ in arrivals) == ["node1", "node2", "node3"]


def test_driver_and_nodes_share_barriers(driver: Driver) -> None:
    node1, node2, node3 = driver.machines
    node1.execute("nxc-sync signal-and-wait go 4 && touch passed", check_output=False)
    node2.execute("nxc-sync signal-and-wait go 4 && touch passed", check_output=False)
    node3.succeed("nxc-sync signal go")
    with pytest.raises(WaitTimeout, match=r"barrier go: 3 of 4 after 0.5s"):
        driver.sync.barrier("go", 4, timeout=0.5)
    node1.fail("test -e passed")
    assert driver.sync.signal("go") == 4
    driver.barrier("go", 4, timeout=10)
    for machine in (node1, node2):
        machine.wait_for_file("passed", timeout=10)
    # Default count: every node.
    driver.barrier("go", timeout=1)


def test_late_subscriber_sees_every_message_in_order(
    driver: Driver, node_env: NodeEnv, service: SyncService
) -> None:
    node1, node2, _ = driver.machines
    for n in range(1, 6):
        assert node1.succeed(f"nxc-sync publish news 'item {n}'") == f"{n}\n"
    # Subscribed after five messages: it gets them all, then waits for the next.
    node2.execute("nxc-sync --count 7 subscribe news > got", check_output=False)
    time.sleep(0.3)
    driver.sync.publish("news", "item 6")
    node1.succeed("nxc-sync publish news 'item 7'")
    node2.wait_until_succeeds("test $(wc -l < got) -eq 7", timeout=20)
    expected = [f"item {n}" for n in range(1, 8)]
    assert node2.succeed("cat got").splitlines() == expected
    # The Python client and the driver see the same, also from the middle.
    with SyncClient(service.config(), "prog") as program:
        assert [v.decode() for v in program.messages("news", 7, timeout=5)] == expected
        stream = program.subscribe("news", start=6, timeout=5)
        assert [next(stream), next(stream)] == [b"item 6", b"item 7"]
    assert driver.sync.messages("news", 2) == ["item 1", "item 2"]
    env = node_env("node9")
    assert nxc_sync(env, "--from", "7", "--count", "1", "subscribe", "news").stdout == "item 7\n"


def test_discover_returns_every_record(driver: Driver) -> None:
    for machine in driver.machines:
        machine.succeed("nxc-sync announce db")
    records = driver.sync.discover("db", 3, timeout=20)
    assert sorted(r["name"] for r in records) == ["node1", "node2", "node3"]
    assert all(r["tags"] == ["db"] for r in records)
    names = driver.machines[0].succeed("nxc-sync --field name discover db 3").split()
    assert sorted(names) == ["node1", "node2", "node3"]


def test_waits_time_out_with_what_they_saw(node_env: NodeEnv) -> None:
    env = node_env("node1")
    assert nxc_sync(env, "signal", "half").stdout == "1\n"
    started = time.monotonic()
    result = nxc_sync(env, "--timeout", "1", "barrier", "half", "2")
    assert result.returncode == 124
    assert result.stderr.strip() == "nxc-sync: barrier half: 1 of 2 after 1s"
    assert time.monotonic() - started < 10
    result = nxc_sync(env, "--timeout", "1", "discover", "nobody", "1")
    assert (result.returncode, result.stderr.strip()) == (
        124,
        "nxc-sync: discover nobody: 0 of 1 records after 1s",
    )
    assert nxc_sync(env, "count", "half").stdout == "1\n"


def test_start_after_waits_for_its_conditions(node_env: NodeEnv, service: SyncService) -> None:
    env = node_env("client1", start_after="servers-up=2 warm=1")
    process = subprocess.Popen(
        [f"{env['PATH']}/sh", f"{env['PATH']}/nxc-sync", "start-after"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    with service.client("server") as server:
        server.signal("servers-up")
        time.sleep(0.3)
        assert process.poll() is None, "start-after returned before its conditions held"
        server.signal("servers-up")
        server.signal("warm")
    assert process.wait(timeout=20) == 0
    assert process.stderr is not None
    assert "waiting for 2 signal(s) of servers-up" in process.stderr.read()
    # No conditions: nothing to wait for, and no connection needed.
    assert nxc_sync(node_env("server1"), "start-after").returncode == 0


def test_a_wrong_token_or_another_deployment_cannot_join(
    node_env: NodeEnv, service: SyncService, tmp_path: Path
) -> None:
    result = nxc_sync(node_env("intruder", token="0" * 48), "signal", "x")
    assert result.returncode == 3
    assert "the sync service refused the token: WRONGPASS" in result.stderr
    # A second deployment's service: its token does not open ours, and ours not its.
    other_dir = tmp_path / "other"
    other_dir.mkdir(mode=0o700)
    other = start_service(other_dir, tmp_path / "o.log", Ledger(tmp_path / "ol"), "other")
    try:
        result = nxc_sync(node_env("stranger", token=other.token), "signal", "x")
        assert result.returncode == 3
        with SyncClient(other.config()) as theirs, pytest.raises(SyncError, match="refused"):
            SyncClient(
                type(other.config())(
                    token=service.token, scope="other", unix_socket=str(other.unix_socket)
                )
            ).signal("x")
        assert theirs.count("x") == 0
    finally:
        stop_service(other)
    with SyncClient(service.config()) as ours:
        assert ours.count("x") == 0


def test_only_the_protocol_is_allowed(service: SyncService) -> None:
    import redis

    node = redis.Redis(
        unix_socket_path=str(service.unix_socket), username="nxc", password=service.token
    )
    for command in (("CONFIG", "GET", "*"), ("FLUSHALL",), ("KEYS", "*"), ("FUNCTION", "LIST")):
        with pytest.raises(redis.ResponseError, match="no permissions"):
            node.execute_command(*command)
    with pytest.raises(redis.ResponseError, match="no permissions to access one of the keys"):
        node.execute_command("RPUSH", "elsewhere", "x")
    node.close()


def test_secrets_stay_private(service: SyncService) -> None:
    directory = service.unix_socket.parent
    config = directory / "redis.conf"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert service.token in config.read_text()
    cmdline = Path(f"/proc/{service.pid}/cmdline").read_bytes()
    assert service.token.encode() not in cmdline
    assert b"nxc-admin" not in cmdline


def test_another_user_cannot_reach_the_socket(service: SyncService) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to run a command as another user")
    nobody = pwd.getpwnam("nobody")
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(service.unix_socket)!r})\n"
        "except OSError as e:\n"
        "    print(type(e).__name__); sys.exit(0)\n"
        "print('connected')\n"
    )
    result = subprocess.run(
        ["python3", "-c", probe],
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    assert result.stdout.strip() == "PermissionError", result


def test_bad_names_and_usage(node_env: NodeEnv) -> None:
    env = node_env("node1")
    for args in (("signal", "../x"), ("barrier", "x", "three"), ("publish", "t"), ("nope",)):
        result = nxc_sync(env, *args)
        assert result.returncode == 2, (args, result)
    with pytest.raises(SyncError, match="bad state"):
        check_name("a b", "state")


def test_service_answers_many_waiters_at_once(service: SyncService) -> None:
    released: list[int] = []
    lock = threading.Lock()

    def participant(n: int) -> None:
        with SyncClient(service.config(f"p{n}"), f"p{n}") as client:
            client.signal_and_wait("crowd", 50, timeout=30)
            with lock:
                released.append(n)

    threads = [threading.Thread(target=participant, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(released) == list(range(50))
    with service.client() as client, pytest.raises(SyncTimeout):
        client.barrier("crowd", 51, timeout=0.2)


def test_stopping_the_service_is_a_clear_error(tmp_path: Path, node_env: NodeEnv) -> None:
    directory = tmp_path / "short"
    directory.mkdir(mode=0o700)
    short = start_service(directory, tmp_path / "s.log", Ledger(tmp_path / "sl"), "short")
    client = short.client()
    client.ping()
    stop_service(short)
    assert not short.is_running()
    with pytest.raises(SyncError, match="cannot reach the sync service"):
        client.signal("x")
    # The driver's wrapper makes it one nxc line.
    from nxc.driver.sync import Sync
    from nxc.log import Logger

    with pytest.raises(NxcError, match="sync: signal x: cannot reach"):
        Sync(client, Logger(), 1, {}).signal("x")


def test_start_after_counts_resolve_per_deployment() -> None:
    manifest = Manifest.from_dict(
        {
            "nxc_manifest": 1,
            "composition": "ring",
            "flavour": "vm-ramdisk",
            "roles": {
                "server": {"quantity": 2},
                "client": {
                    "quantity": 1,
                    "start_after": [
                        {"state": "connected", "count": "server", "timeout": 90},
                        {"state": "all-up", "count": "all"},
                        {"state": "warm", "count": 1},
                    ],
                },
            },
        }
    )
    nodes = [
        {
            "name": f"server{i}",
            "role": "server",
            "index": i,
            "ipv4": f"198.18.0.{i}",
            "ipv6": "",
            "mac": f"52:54:00:00:00:0{i}",
        }
        for i in (1, 2, 3)
    ] + [
        {
            "name": "client1",
            "role": "client",
            "index": 1,
            "ipv4": "198.18.0.9",
            "ipv6": "",
            "mac": "52:54:00:00:00:09",
        }
    ]
    deployment = Deployment.from_dict(
        {
            "nxc_deployment": 1,
            "id": "ring-abc123",
            "composition": "ring",
            "flavour": "vm-ramdisk",
            "network": {
                "ipv4_prefix": "198.18.0.0/16",
                "ipv6_prefix": "fd00::/64",
                "interface": "nxc0",
            },
            "ssh": {"authorized_keys": ["ssh-ed25519 AAAA test"]},
            "roles": {"server": 3, "client": 1},
            "nodes": nodes,
        }
    )
    # Three servers at start time (-r server=3), not the composition's two.
    assert resolve_start_after(manifest, deployment, "client") == (
        "connected=3 all-up=4 warm=1",
        90.0,
    )
    assert resolve_start_after(manifest, deployment, "server") == ("", None)
    bad = Manifest.from_dict(
        {
            **manifest.raw,
            "roles": {"client": {"quantity": 1, "start_after": [{"state": "x", "count": "sever"}]}},
        }
    )
    with pytest.raises(ContractError, match="count 'sever' is neither a number, 'all' nor a role"):
        resolve_start_after(bad, deployment, "client")
