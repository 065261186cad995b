"""Fixtures of the docker flavour's tests: the real selftest composition built for docker
by real nix, a dockerd isolated in its own network namespace, and a snapshot of the
host's firewall and routes (which nothing here may change)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc.project import Project
from tests.conftest import run_nxc

pytestmark = pytest.mark.docker


def require_docker() -> None:
    missing = [t for t in ("nix", "dockerd", "nsenter", "ip") if not shutil.which(t)]
    if missing:
        pytest.fail(f"docker tests need {', '.join(missing)} (run scripts/setup)")
    if os.geteuid() != 0:
        pytest.fail("docker tests need root (network namespaces for an isolated dockerd)")


def host_network() -> dict[str, str]:
    """The host's firewall rules and routes, as text (compared before and after)."""
    commands = {
        "iptables": ["iptables-save"],
        "ip6tables": ["ip6tables-save"],
        "routes": ["ip", "route"],
        "routes6": ["ip", "-6", "route"],
        "nft": ["nft", "list", "ruleset"],
        "forwarding": ["cat", "/proc/sys/net/ipv4/ip_forward"],
        "links": ["ip", "-o", "link", "show"],
    }
    found = {}
    for name, argv in commands.items():
        if shutil.which(argv[0]) is None:
            continue
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        # iptables-save stamps the time of the dump in comments: not part of the rules.
        lines = [ln for ln in done.stdout.splitlines() if not ln.startswith("#")]
        found[name] = "\n".join(lines) + f"\n(exit {done.returncode})"
    return found


def host_links() -> set[str]:
    done = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in done.stdout.splitlines()}


@pytest.fixture(scope="session")
def built_docker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`nxc init -t selftest` + `nxc build -f docker`, once per test session."""
    require_docker()
    directory = tmp_path_factory.mktemp("docker-selftest")
    result = run_nxc("init", "-t", "selftest", str(directory))
    assert result.returncode == 0, result.stderr
    result = run_nxc("build", "-f", "docker", "--offline", cwd=directory)
    assert result.returncode == 0, result.stderr
    manifest = Path(Project(directory).builds()["docker"]["manifest"])
    assert manifest.is_file()
    return directory


class IsolatedDockerd:
    """A dockerd the test starts itself (not through nxc) in its own network namespace,
    as MACHINE-NOTES says: nxc sees it as the user's daemon, through DOCKER_HOST."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.netns = f"nxc-test-docker-{os.getpid()}"
        self.socket = root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        (self.root / "daemon.json").write_text("{}\n")
        argv = [
            "nsenter", f"--net=/run/netns/{self.netns}", "dockerd",
            "--config-file", str(self.root / "daemon.json"),
            "--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
            "--storage-driver", "vfs", "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "pid"),
            "-H", self.url,
        ]  # fmt: skip
        with open(self.root / "dockerd.log", "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "the test's dockerd did not start: "
                    + (self.root / "dockerd.log").read_text()[-2000:]
                )
            time.sleep(0.05)

    def answers(self) -> bool:
        import docker

        if not self.socket.exists():
            return False
        try:
            docker.DockerClient(base_url=self.url, version="auto").close()
        except docker.errors.DockerException:
            return False
        return True

    def client(self):  # type: ignore[no-untyped-def]
        import docker

        return docker.DockerClient(base_url=self.url, version="auto")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        # What a dockerd leaves when it dies: its containerd and shims (named by our
        # directory), mounts under it.
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    argv = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if str(self.root).encode() in argv and int(entry.name) != os.getpid():
                    os.kill(int(entry.name), signal.SIGKILL)
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        points = sorted(
            (ln.split()[4] for ln in mounts if ln.split()[4].startswith(str(self.root))),
            key=len,
            reverse=True,
        )
        for point in points:
            subprocess.run(["umount", "-l", point], check=False)
        subprocess.run(["ip", "netns", "delete", self.netns], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def isolated_dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IsolatedDockerd]:
    require_docker()
    # A short path: the daemon's sockets live under it.
    root = Path(f"/tmp/nxc-test-dockerd-{os.getpid()}")
    root.mkdir(mode=0o700)
    daemon = IsolatedDockerd(root)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
