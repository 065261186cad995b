"""The docker flavour on "the user's" daemon (a dockerd this test starts, isolated in
its own network namespace, that nxc finds through DOCKER_HOST): images loaded once per
store path, labels, cleanup after SIGKILL of ``nxc start``, and the exec transport
(commands, timeouts, Ctrl-C, copies, concurrency) and shell."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc.project import Project
from nxc.runtime.transport import TransportError
from tests.conftest import run_nxc
from tests.docker.conftest import IsolatedDockerd

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def project(built_docker: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second project (the private-dockerd tests use the first), same build."""
    directory = tmp_path_factory.mktemp("docker-user")
    for name in ("flake.nix", "flake.lock", "composition.nix", "test.py"):
        shutil.copy(built_docker / name, directory / name)
    result = run_nxc("build", "-f", "docker", "--offline", cwd=directory)
    assert result.returncode == 0, result.stderr
    return directory


def _env(daemon: IsolatedDockerd) -> dict[str, str]:
    return {"DOCKER_HOST": daemon.url}


def _labelled(daemon: IsolatedDockerd, project: Path) -> list[str]:
    client = daemon.client()
    label = {"label": f"nxc.project={Project(project).state_dir.name}"}
    found = [f"container {c.name}" for c in client.containers.list(all=True, filters=label)]
    found += [f"network {n.name}" for n in client.networks.list(filters=label)]
    found += [f"volume {v.name}" for v in client.volumes.list(filters=label)]
    return found


def test_images_load_once_per_store_path(project: Path, isolated_dockerd: IsolatedDockerd) -> None:
    env = _env(isolated_dockerd)
    first = run_nxc("start", "-f", "docker", "-r", "node=2", cwd=project, env=env)
    assert first.returncode == 0, first.stderr
    assert f"using the Docker daemon at {isolated_dockerd.url} (DOCKER_HOST)" in first.stderr
    assert "loading 1 image(s)" in first.stderr
    state = json.loads(Project(project).runtime_file.read_text())["state"]
    assert state["daemon"] == {"mode": "user", "url": isolated_dockerd.url, "source": "DOCKER_HOST"}
    images = isolated_dockerd.client().images.list(name="nxc-image")
    assert len(images) == 1
    created = images[0].attrs["Created"]
    assert images[0].labels["nxc.store-path"].endswith("/rootfs.tar")
    stopped = run_nxc("stop", cwd=project, env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert "kept image nxc-image:" in stopped.stdout
    assert _labelled(isolated_dockerd, project) == []
    again = run_nxc("start", "-f", "docker", "-r", "node=2", cwd=project, env=env)
    try:
        assert again.returncode == 0, again.stderr
        assert "images already loaded" in again.stderr
        assert "loading" not in again.stderr
        images = isolated_dockerd.client().images.list(name="nxc-image")
        assert [i.attrs["Created"] for i in images] == [created]
    finally:
        assert run_nxc("stop", cwd=project, env=env).returncode == 0
    assert _labelled(isolated_dockerd, project) == []


def test_stop_after_sigkill_of_start(project: Path, isolated_dockerd: IsolatedDockerd) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "nxc.cli", "start", "-f", "docker", "-r", "node=3"],
        cwd=project,
        env={**os.environ, **_env(isolated_dockerd)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ledger = Project(project).ledger.path
    deadline = time.monotonic() + 120
    # Kill it once it is creating containers (the first is in the ledger).
    while time.monotonic() < deadline and process.poll() is None:
        if ledger.exists() and '"docker-container"' in ledger.read_text():
            break
        time.sleep(0.01)
    assert process.poll() is None, "start ended before creating containers"
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert _labelled(isolated_dockerd, project) != [], "nothing was created before the kill"
    result = run_nxc("stop", cwd=project, env=_env(isolated_dockerd))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not Project(project).current_dir.exists()
    # The daemon may finish a create request of the killed process after it: watch a
    # moment that nothing labelled turns up.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert _labelled(isolated_dockerd, project) == []
        time.sleep(0.2)


def test_volumes_and_ports_from_the_manifest(
    project: Path, isolated_dockerd: IsolatedDockerd, tmp_path: Path
) -> None:
    """NixOS Compose's extraVolumes/dockerPorts: a named volume nxc creates (and removes),
    a host directory bound read-only, a published port."""
    built = json.loads(Path(Project(project).builds()["docker"]["manifest"]).read_text())
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from the host\n")
    volume = f"nxc-test-volume-{os.getpid()}"
    built["roles"]["node"]["container"]["volumes"] = [f"{volume}:/data", f"{shared}:/shared:ro"]
    built["roles"]["node"]["container"]["ports"] = ["18080:80"]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(built))
    env = _env(isolated_dockerd)
    result = run_nxc("start", "-m", str(manifest), "-r", "node=1", cwd=project, env=env)
    try:
        assert result.returncode == 0, result.stderr
        client = isolated_dockerd.client()
        assert client.volumes.get(volume).attrs["Labels"]["nxc.project"]
        container = client.containers.list(filters={"label": "nxc.node=node1"})[0]
        assert container.exec_run(["cat", "/shared/hello"]).output == b"from the host\n"
        assert container.exec_run(["touch", "/shared/x"]).exit_code != 0  # read-only
        assert container.exec_run(["touch", "/data/x"]).exit_code == 0
        assert container.attrs["HostConfig"]["PortBindings"] == {
            "80/tcp": [{"HostIp": "", "HostPort": "18080"}]
        }
    finally:
        stopped = run_nxc("stop", cwd=project, env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert f"removed volume {volume}" in stopped.stdout
    assert _labelled(isolated_dockerd, project) == []


@pytest.mark.parametrize("dockerd", ["user", "private"])
def test_stop_with_a_lost_ledger(
    project: Path, isolated_dockerd: IsolatedDockerd, dockerd: str
) -> None:
    """The ledger gone, nxc stop still finds everything: labelled objects on the user's
    daemon, the private dockerd (state file, marked runtime directory)."""
    env = _env(isolated_dockerd)
    result = run_nxc(
        "start", "-f", "docker", "--dockerd", dockerd, "-r", "node=2", cwd=project, env=env
    )
    assert result.returncode == 0, result.stderr
    state = json.loads(Project(project).runtime_file.read_text())["state"]
    # The test's "user" daemon lives in a network namespace of its own: no relay can
    # reach its management network from here, and nxc says so instead of failing.
    warned = "warning: containers get no sync service" in result.stdout + result.stderr
    assert warned == (dockerd == "user"), result.stdout + result.stderr
    assert bool(state["management"]["relay"]) == (dockerd == "private")
    Project(project).ledger.path.unlink()
    stopped = run_nxc("stop", cwd=project, env=env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not Project(project).current_dir.exists()
    assert not Path(state["runtime_dir"]).exists()
    # No process of that deployment left (the sync relay, the sync service...).
    needle = state["runtime_dir"].encode()
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    left.append(entry.name)
            except OSError:
                continue
    assert left == [], left
    if dockerd == "user":
        assert _labelled(isolated_dockerd, project) == []
    else:
        from nxc.ledger import process_start_time

        daemon = state["daemon"]
        assert process_start_time(daemon["pid"]) is None
        assert not Path("/run/netns", daemon["netns"]).exists()


@pytest.fixture(scope="module")
def nodes(project: Path, isolated_dockerd: IsolatedDockerd) -> Iterator[dict]:  # type: ignore[type-arg]
    from nxc.running import running

    env = _env(isolated_dockerd)
    result = run_nxc("start", "-f", "docker", "-r", "node=2", cwd=project, env=env)
    try:
        assert result.returncode == 0, result.stderr
        yield running(Project(project)).nodes()
    finally:
        run_nxc("stop", cwd=project, env=env)


def test_commands(nodes: dict) -> None:  # type: ignore[type-arg]
    transport = nodes["node1"].transport()
    result = transport.run("echo out; printf 'err\\0\\377' >&2; exit 3")
    assert (result.status, result.stdout, result.stderr) == (3, b"out\n", b"err\x00\xff")
    identity = transport.run("echo $NXC_NODE $NXC_ROLE $NXC_INDEX $HOME").output
    assert identity == "node1 node 1 /root\n"
    assert transport.run("cat /etc/hostname; hostname").output == "node1\nnode1\n"
    big = transport.run("head -c 3000000 /dev/zero | tr '\\0' x")
    assert big.stdout == b"x" * 3_000_000
    # A daemon a command starts keeps its own output: the command still ends at once.
    started = transport.run("sleep 300 & echo started", timeout=20)
    assert started.output == "started\n"
    transport.run("pkill -f 'sleep 300' || killall sleep", timeout=20)


def test_timeout_kills_the_command(nodes: dict) -> None:  # type: ignore[type-arg]
    transport = nodes["node2"].transport()
    expected = r"node2: `sleep 431; echo late` still running after 1s: killed it"
    with pytest.raises(TimeoutError, match=expected):
        transport.run("sleep 431; echo late", timeout=1)
    assert "sleep 431" not in transport.run("ps -o args").output
    assert transport.run("true").status == 0


def test_ctrl_c_kills_the_command(
    nodes: dict,  # type: ignore[type-arg]
    project: Path,
    isolated_dockerd: IsolatedDockerd,
) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\nfrom nxc.project import Project\n"
        "from nxc.running import running\n"
        "t = running(Project(Path(sys.argv[1]))).nodes()['node1'].transport()\n"
        "print('running', flush=True)\n"
        "try:\n"
        "    t.run('sleep 437')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(project)],
        env={**os.environ, **_env(isolated_dockerd)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "running\n"
    transport = nodes["node1"].transport()
    deadline = time.monotonic() + 30
    while "sleep 437" not in transport.run("ps -o args").output:
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    assert out == "interrupted\n"
    assert "sleep 437" not in transport.run("ps -o args").output


def test_commands_run_concurrently(nodes: dict) -> None:  # type: ignore[type-arg]
    transport = nodes["node1"].transport()
    transport.run("rm -f /tmp/barrier.*")
    # Each waits for all four to have started: one at a time, the first would time out.
    command = (
        "touch /tmp/barrier.{i}; "
        "until [ $(ls /tmp/barrier.* | wc -l) -ge 4 ]; do sleep 0.05; done; echo {i}"
    )
    results: dict[int, object] = {}

    def one(i: int) -> None:
        try:
            results[i] = transport.run(command.format(i=i), timeout=60).output
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert results == {i: f"{i}\n" for i in range(4)}


def test_copies_keep_content_and_mode(nodes: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    transport = nodes["node2"].transport()
    source = tmp_path / "payload"
    source.write_bytes(bytes(range(256)) * 4000)
    source.chmod(0o751)
    for target in ("/root/payload", "/tmp/payload"):  # the root fs, and a tmpfs
        transport.put(source, target)
        assert transport.run(f"stat -c %a {target}").output == "751\n"
        digest = hashlib.md5(source.read_bytes()).hexdigest()
        assert transport.run(f"md5sum < {target}").output.split()[0] == digest
        back = tmp_path / f"back{target.replace('/', '-')}"
        transport.get(target, back)
        assert back.read_bytes() == source.read_bytes()
        assert back.stat().st_mode & 0o777 == 0o751
    assert "nxc-put" not in transport.run("ls -a / /tmp /root").output
    with pytest.raises(TransportError, match=r"node2: writing /nowhere/x failed"):
        transport.put(source, "/nowhere/x")
    with pytest.raises(TransportError, match=r"node2: reading /nowhere/x failed.*no such file"):
        transport.get("/nowhere/x", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_closed_transport_fails_in_flight_commands(nodes: dict) -> None:  # type: ignore[type-arg]
    from nxc.flavours.docker.transport import DockerExecTransport

    node = nodes["node1"]
    transport = DockerExecTransport(node.api, node.container, "node1", node.environment)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            transport.run("sleep 443", timeout=60)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)
    transport.close()
    thread.join(30)
    assert failure and isinstance(failure[0], TransportError), failure
    with pytest.raises(TransportError, match="closed"):
        transport.run("true")
    node.transport().run("pkill -f 'sleep 443' || true")


def test_connect_opens_a_shell_through_docker_exec(
    nodes: dict,  # type: ignore[type-arg]
    project: Path,
    isolated_dockerd: IsolatedDockerd,
) -> None:
    # The daemon's bridge is in its own namespace: no ssh endpoint, connect uses exec.
    result = subprocess.run(
        [sys.executable, "-m", "nxc.cli", "connect", "node2"],
        cwd=project,
        env={**os.environ, **_env(isolated_dockerd)},
        input="echo shell-on-$NXC_NODE; exit 7\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "shell-on-node2" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 7
