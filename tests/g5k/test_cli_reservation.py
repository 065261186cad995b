"""Reservation wired into ``nxc start``/``stop``/``status``/``extend``, through the real
CLI (a subprocess) against the API double on a real clock.

These nodes are not bound to anything: no node answers ssh (the ssh config sends
every node to a closed port), so a start reserves, then fails while contacting the
standard environment, which is what these tests need to see how the job is treated
(released, kept, reused, attached). The end-to-end runs on VMs are in
``test_rehearsal_ramdisk.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nxc.ledger import Ledger
from nxc.project import Project
from nxc.testbeds.g5k_double import G5kDouble, Timings
from nxc.testbeds.g5k_double.jobs import Job
from tests.conftest import REPO, run_nxc, sample_manifest

USER, PASSWORD = "alice", "secret"
FAST = Timings(schedule_s=0.2, launch_s=0.2, finish_s=0.2, deploy_s=1)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def double() -> Iterator[G5kDouble]:
    with G5kDouble({USER: PASSWORD, "bob": "hunter2"}, timings=FAST) as g5k:
        yield g5k


@pytest.fixture
def project(tmp_path: Path, double: G5kDouble) -> Iterator[tuple[Path, dict[str, str]]]:
    """A project with a g5k-ramdisk manifest, and the environment pointing nxc at the
    double (credentials file, an ssh config where no node answers, known_hosts)."""
    root = tmp_path / "exp"
    root.mkdir()
    (root / "flake.nix").write_text("{ outputs = _: { }; }\n")
    document = sample_manifest(root)
    document["flavour"] = "g5k-ramdisk"
    (root / "manifest.json").write_text(json.dumps(document))
    config = tmp_path / "g5k.yaml"
    config.write_text(yaml.safe_dump({"uri": double.url, "username": USER, "password": PASSWORD}))
    config.chmod(0o600)
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host *.grid5000.fr\n  HostName 127.0.0.1\n  Port {closed_port()}\n")
    known = tmp_path / "known_hosts"
    known.write_text("")
    env = {
        "NXC_G5K_CONFIG": str(config),
        "NXC_G5K_SSH_CONFIG": str(ssh_config),
        "NXC_G5K_KNOWN_HOSTS": str(known),
        "NXC_G5K_SITE": "rennes",
    }
    yield root, env
    run_nxc("stop", "-p", str(root), env=env)


def jobs(double: G5kDouble) -> list[Job]:
    with double.backend.lock:
        double.backend.tick()
        return sorted(double.backend.jobs.jobs.values(), key=lambda j: j.uid)


def alive(double: G5kDouble) -> list[Job]:
    return [j for j in jobs(double) if j.state not in ("error", "terminated", "finishing")]


def start(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_nxc(
        "start", "-p", str(root), "-m", str(root / "manifest.json"),
        "--stdenv-timeout", "0", "--job-timeout", "60", *args,
        env=env, timeout=120,
    )  # fmt: skip


def test_failed_start_releases_its_job(double: G5kDouble, project: tuple[Path, dict]) -> None:
    root, env = project
    result = start(root, env)
    assert result.returncode == 1
    assert "submitting OAR job" in result.stderr
    assert "no node could be prepared: server1, client1, client2" in result.stderr
    assert "rennes.grid5000.fr): cannot connect to 127.0.0.1" in result.stderr
    [job] = jobs(double)
    assert job.name and job.name.startswith("nxc-demo-")
    assert job.state in ("finishing", "error"), "the failed start did not release its job"
    assert job.request is not None and "nodes=3" in job.resources
    assert not Project(root).ledger.exists(), "the ledger was not emptied"


def test_keep_job_then_reuse_by_name(double: G5kDouble, project: tuple[Path, dict]) -> None:
    root, env = project
    first = start(root, env, "--keep-job")
    assert first.returncode == 1
    [job] = alive(double)
    assert job.state == "running"
    second = start(root, env, "--keep-job")
    assert second.returncode == 1
    assert f"reusing job rennes:{job.uid}" in second.stderr
    assert [j.uid for j in jobs(double)] == [job.uid], "a second job was submitted"
    # Without --keep-job, the reused job goes with the failed start.
    third = start(root, env)
    assert third.returncode == 1
    assert alive(double) == []


def test_attach_a_job_reserved_by_hand(double: G5kDouble, project: tuple[Path, dict]) -> None:
    from grid5000 import Grid5000

    root, env = project
    client = Grid5000(uri=double.url, username=USER, password=PASSWORD)
    mine = client.sites["rennes"].jobs.create(
        {"command": "sleep 1d", "resources": "nodes=3,walltime=1:00", "name": "by-hand"}
    )
    result = start(root, env, "--job", f"rennes:{mine.uid}")
    assert result.returncode == 1
    assert f"attaching job(s) rennes:{mine.uid}" in result.stderr
    assert [j.uid for j in jobs(double)] == [int(mine.uid)], "nxc submitted its own job"
    assert [j.uid for j in alive(double)] == [int(mine.uid)], "the attached job was released"
    # Someone else's job cannot be attached.
    bob = Grid5000(uri=double.url, username="bob", password="hunter2")
    theirs = bob.sites["rennes"].jobs.create({"command": "sleep 1d", "resources": "nodes=1"})
    refused = start(root, env, "--job", f"rennes:{theirs.uid}")
    assert refused.returncode == 1
    assert f"belongs to bob, not to {USER}" in refused.stderr


def test_one_job_per_site_in_parallel(double: G5kDouble, project: tuple[Path, dict]) -> None:
    root, env = project
    result = start(
        root, env, "--site", "server=nancy", "--site", "client=rennes", "--cluster",
        "client=paravance", "--keep-job",
    )  # fmt: skip
    assert result.returncode == 1
    found = {(j.site, j.resources) for j in alive(double)}
    assert found == {
        ("nancy", "nodes=1,walltime=1:00:00"),
        ("rennes", "{cluster='paravance'}/nodes=2,walltime=1:00:00"),
    }
    assert "on nancy, rennes" in result.stderr or "on rennes, nancy" in result.stderr


def test_timeout_while_waiting_releases_the_job(
    double: G5kDouble, project: tuple[Path, dict]
) -> None:
    root, env = project
    began = time.monotonic()
    result = start(root, env, "--reservation", "2099-01-01 00:00:00", "--job-timeout", "3")
    assert result.returncode == 1
    assert time.monotonic() - began < 60
    error = next(line for line in result.stderr.splitlines() if line.startswith("nxc: error:"))
    assert "jobs not running after 3 s: rennes:" in error, result.stderr
    assert "waiting, scheduled start 2098-12-31" in error
    [job] = jobs(double)
    assert job.state == "error", "the waiting job was not released"


def test_sigkill_while_waiting_then_stop_releases(
    double: G5kDouble, project: tuple[Path, dict]
) -> None:
    root, env = project
    process = subprocess.Popen(
        [sys.executable, "-m", "nxc.cli", "start", "-p", str(root), "-m",
         str(root / "manifest.json"), "--reservation", "2099-01-01 00:00:00"],
        env={**os.environ, **env}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not alive(double) and time.monotonic() < deadline:
        time.sleep(0.1)
    [job] = alive(double)
    time.sleep(1)  # nxc is in its wait loop now
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert [j.state for j in alive(double)] == ["waiting"], "the job vanished with nxc"
    kinds = [r.kind for r in Ledger(Project(root).ledger.path).entries()]
    assert "g5k-job" in kinds
    stopped = run_nxc("stop", "-p", str(root), env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert f"released OAR job rennes:{job.uid}" in stopped.stdout
    assert alive(double) == []


def test_stop_keep_job_then_the_next_start_reuses_it(
    double: G5kDouble, project: tuple[Path, dict]
) -> None:
    root, env = project
    process = subprocess.Popen(
        [sys.executable, "-m", "nxc.cli", "start", "-p", str(root), "-m",
         str(root / "manifest.json"), "--reservation", "2099-01-01 00:00:00"],
        env={**os.environ, **env}, cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not alive(double) and time.monotonic() < deadline:
        time.sleep(0.1)
    [job] = alive(double)
    time.sleep(1)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    kept = run_nxc("stop", "-p", str(root), "--keep-job", env=env)
    assert kept.returncode == 0, kept.stderr
    assert f"kept OAR job rennes:{job.uid}" in kept.stdout
    assert [j.uid for j in alive(double)] == [job.uid]
    assert not Project(root).ledger.exists()
    again = start(root, env, "--reservation", "2099-01-01 00:00:00", "--job-timeout", "2")
    assert f"reusing job rennes:{job.uid}" in again.stderr
    assert [j.uid for j in jobs(double)] == [job.uid], "a second job was submitted"
    assert alive(double) == [], "the timed-out start did not release the reused job"


def test_extend_without_a_reservation_is_one_line() -> None:
    from nxc.errors import NxcError
    from nxc.flavours.vm_ramdisk.runtime import VmRamdiskRuntime

    with pytest.raises(NxcError, match="flavour vm-ramdisk has no reservation"):
        VmRamdiskRuntime().extend(Project(REPO), None, "+1:00")  # type: ignore[arg-type]
