"""The apply/reset logic against scripted fake machines (no kernel involved)."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from nxc.driver.machine import Machine
from nxc.errors import NxcError
from nxc.flavours.vm_ramdisk.backdoor import BackdoorTransport
from nxc.log import Logger
from nxc.netem import apply as ap
from nxc.netem import tcgen
from nxc.netem.cli import NetemSession, netem
from nxc.netem.model import Topology
from nxc.netem.netns import make_deployment
from nxc.netem.state import APPLIED_FILE

DEPLOYMENT = make_deployment({"server": 1, "client": 2})
TOPOLOGY = Topology().constrain("server", "client", delay="50ms")

CLEAN = (
    "@@nxc link present\n@@nxc qdisc\nqdisc noqueue 0: root refcnt 2\n"
    "@@nxc ingress\n@@nxc ifb absent\n@@nxc end\n"
)
OURS = CLEAN.replace("qdisc noqueue 0: root refcnt 2", "qdisc htb 6e78: root refcnt 3 r2q 10")
FOREIGN = CLEAN.replace("qdisc noqueue 0: root refcnt 2", "qdisc tbf 1: root refcnt 2 rate 1Mbit")
PROBE_OK = "@@nxc probe ifb ok\n@@nxc probe htb ok\n@@nxc probe netem ok\n"
PROBE_NO_NETEM = (
    "@@nxc probe ifb ok\n@@nxc probe htb ok\n"
    "@@nxc probe netem missing Error: Specified qdisc kind is unknown.\n"
)


class FakeMachine:
    """Answers netem's commands like a node would; records every command."""

    def __init__(self, state: str = CLEAN, probe: str = PROBE_OK, batch: tuple[int, str] = (0, "")):
        self.state = state
        self.probe = probe
        self.batch = batch
        self.commands: list[str] = []

    def execute(self, command: str, *, timeout: int | None = None) -> tuple[int, str]:
        self.commands.append(command)
        if "nxc_find" in command:
            return 0, "@@nxc tc=/usr/sbin/tc\n@@nxc ip=/usr/sbin/ip\n"
        if "nxcprobe" in command:
            return 0, self.probe
        if "@@nxc link" in command:
            return 0, self.state
        if "-batch -" in command:
            status, output = self.batch
            if status == 0:
                self.state = OURS if "qdisc add dev nxc0 root" in command else CLEAN
            return status, output
        return 0, ""

    def batches(self) -> list[str]:
        return [c for c in self.commands if "-batch -" in c]


def machines(**overrides: FakeMachine) -> dict[str, FakeMachine]:
    return {n.name: overrides.get(n.name, FakeMachine()) for n in DEPLOYMENT.nodes}


def test_apply_runs_one_batch_per_node_by_full_path() -> None:
    ms = machines()
    ap.Netem(DEPLOYMENT, ms, TOPOLOGY).apply()
    for name, machine in ms.items():
        (batch,) = machine.batches()
        assert batch.startswith("{\n/usr/sbin/tc -batch - <<'NXC_EOF' ||"), name
        assert "netem limit" in batch
    assert len(ms["server1"].commands) == 4  # detect, probe, inspect, batch


def test_set_after_apply_changes_leaves_in_place() -> None:
    ms = machines()
    net = ap.Netem(DEPLOYMENT, ms, TOPOLOGY)
    net.apply()
    net.set("server", "client1", delay="80ms")
    last = ms["server1"].batches()[-1]
    assert "qdisc change dev nxc0 parent 6e78:3 handle 8002: netem" in last
    assert "delay 80ms" in last and "qdisc del" not in last
    assert len(ms["client2"].batches()) == 1  # nothing changed there
    net.partition(["client1"], ["server"])
    assert "loss 100%" in ms["client1"].batches()[-1]
    net.heal()
    assert "delay 80ms" in ms["client1"].batches()[-1]


def test_missing_netem_names_the_node() -> None:
    ms = machines(client1=FakeMachine(probe=PROBE_NO_NETEM))
    with pytest.raises(ap.NetemMissing) as info:
        ap.Netem(DEPLOYMENT, ms, TOPOLOGY).apply()
    message = str(info.value)
    assert message == (
        "netem apply failed on 1 node: client1: the kernel has no 'netem' qdisc (sch_netem): "
        "Error: Specified qdisc kind is unknown."
    )
    assert ms["client1"].batches() == []


def test_unknown_kind_during_the_batch_is_explained_and_rolled_back() -> None:
    failing = FakeMachine(
        probe="@@nxc probe ifb missing\n@@nxc probe htb unknown\n@@nxc probe netem unknown\n",
        batch=(1, "Error: Specified qdisc kind is unknown.\nCommand failed -:5\n@@nxc failed tc\n"),
    )
    ms = machines(server1=failing)
    with pytest.raises(ap.NetemMissing, match=r"server1: the kernel has no 'netem' qdisc") as info:
        ap.Netem(DEPLOYMENT, ms, TOPOLOGY).apply()
    assert "tc refused 'qdisc add dev nxc0 parent 6e78:3 handle 8002: netem limit" in str(
        info.value
    )


def test_other_tc_errors_quote_the_command() -> None:
    script = tcgen.NodeScript(tc=("qdisc add dev nxc0 root handle 6e78: htb default 1",))
    error = ap.explain_failure(
        "n1", script, 'Error: Cannot find device "nxc0".\nCommand failed -:1\n@@nxc failed tc'
    )
    assert isinstance(error, ap.NetemApplyError)
    assert str(error) == (
        "n1: tc refused 'qdisc add dev nxc0 root handle 6e78: htb default 1': "
        'Error: Cannot find device "nxc0".'
    )


def test_foreign_root_is_left_alone() -> None:
    ms = machines(client2=FakeMachine(state=FOREIGN))
    with pytest.raises(tcgen.ForeignQdisc, match="client2: nxc0 already has a root qdisc"):
        ap.Netem(DEPLOYMENT, ms, TOPOLOGY).apply()
    assert ms["client2"].batches() == []
    assert len(ms["server1"].batches()) == 1  # the other nodes were still done


def test_reset_only_where_something_is_installed() -> None:
    ms = machines(server1=FakeMachine(state=OURS))
    ap.Netem(DEPLOYMENT, ms).reset()
    (batch,) = ms["server1"].batches()
    assert "qdisc del dev nxc0 root" in batch
    assert ms["client1"].batches() == []


def test_explicit_tool_paths_skip_detection() -> None:
    ms = machines()
    ap.Netem(DEPLOYMENT, ms, TOPOLOGY, tc_path="/sbin/tc", ip_path="/sbin/ip").apply()
    assert not any("nxc_find" in c for c in ms["server1"].commands)
    assert ms["server1"].batches()[0].startswith("{\n/sbin/tc -batch -")


def test_missing_machine_and_tools() -> None:
    with pytest.raises(NxcError, match="no machine for node"):
        ap.Netem(DEPLOYMENT, {"server1": FakeMachine()}, TOPOLOGY)

    class NoTc(FakeMachine):
        def execute(self, command: str, *, timeout: int | None = None) -> tuple[int, str]:
            if "nxc_find" in command:
                return 0, "@@nxc tc=\n@@nxc ip=/sbin/ip\n"
            return super().execute(command, timeout=timeout)

    with pytest.raises(NxcError, match="client1: iproute2's tc not found"):
        ap.Netem(DEPLOYMENT, machines(client1=NoTc()), TOPOLOGY).apply()


def test_parsers() -> None:
    assert ap.parse_detect("@@nxc tc=/usr/sbin/tc\n@@nxc ip=\n") == ("/usr/sbin/tc", None)
    assert ap.parse_probe(PROBE_NO_NETEM) == {
        "ifb": "ok",
        "htb": "ok",
        "netem": "missing: Error: Specified qdisc kind is unknown.",
    }
    present, state = ap.parse_inspect("nxc0", OURS)
    assert present and state.ours_at_root and not state.ifb_present


@pytest.mark.skipif(shutil.which("tc") is None, reason="needs iproute2 on this host")
@pytest.mark.parametrize("shell", ["sh", "busybox sh"])
def test_detection_finds_iproute2_even_under_busybox(shell: str) -> None:
    if shell.startswith("busybox") and shutil.which("busybox") is None:
        pytest.skip("no busybox")
    done = subprocess.run(
        [*shell.split(), "-c", ap.detect_command()], capture_output=True, text=True, check=False
    )
    tc, ip = ap.parse_detect(done.stdout)
    assert tc is not None and os.path.isabs(tc) and ip is not None
    assert "iproute2" in subprocess.run([tc, "-V"], capture_output=True, text=True).stdout


def test_script_command_passes_the_batch_verbatim(tmp_path: Path) -> None:
    out = tmp_path / "seen"
    fake = tmp_path / "fake-tc"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {out}.args\ncat >> {out}\n')
    fake.chmod(0o755)
    script = tcgen.NodeScript(
        ("link add nxi-x type ifb",), ("qdisc add dev x root 'q'", "l2 $HOME")
    )
    command = ap.script_command(script, str(fake), str(fake))
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout
    assert out.read_text() == "link add nxi-x type ifb\nqdisc add dev x root 'q'\nl2 $HOME\n"
    assert (tmp_path / "seen.args").read_text() == "-batch -\n-batch -\n"


# ------------------------------------------------------------------ the CLI group


def cli_session(tmp_path: Path, topology: Topology | None = None) -> NetemSession:
    machines = {n.name: FakeMachine() for n in DEPLOYMENT.nodes}
    return NetemSession(DEPLOYMENT, machines, topology, tmp_path)


def test_apply_file_dry_run_and_state(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text("nxc_topology: 1\nconstraints:\n  - {from: server, to: client, delay: 5ms}\n")
    s = cli_session(tmp_path)
    runner = CliRunner()
    dry = runner.invoke(netem, ["apply", str(path), "--dry-run"], obj=lambda: s)
    assert dry.exit_code == 0, dry.output
    assert "# server1\nqdisc add dev nxc0 root handle 6e78: htb default 1\n" in dry.output
    assert not (tmp_path / APPLIED_FILE).exists()
    done = runner.invoke(netem, ["apply", str(path)], obj={"netem_session": lambda: s})
    assert done.exit_code == 0, done.output
    assert "applied on 3 nodes (4 shaped pairs)" in done.output
    saved = json.loads((tmp_path / APPLIED_FILE).read_text())
    assert saved["constraints"][0]["delay"] == "5ms"
    shown = runner.invoke(netem, ["show", "--no-state"], obj=lambda: s)
    assert "server1 -> client1: delay 5ms" in shown.output
    reset = runner.invoke(netem, ["reset"], obj=lambda: s)
    assert reset.exit_code == 0 and not (tmp_path / APPLIED_FILE).exists()


def test_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    s = cli_session(tmp_path)
    both = runner.invoke(netem, ["apply"], obj=lambda: s)
    assert both.exit_code == 2 and "give a topology FILE or --from-manifest" in both.output
    none = runner.invoke(netem, ["apply", "--from-manifest"], obj=lambda: s)
    assert "the manifest has no topology" in str(none.exception)
    (tmp_path / "flake.nix").write_text("{ outputs = _: { }; }\n")
    nosession = runner.invoke(netem, ["-p", str(tmp_path), "show"], obj=None)
    assert isinstance(nosession.exception, NxcError)
    assert "no running deployment" in str(nosession.exception), nosession.exception


def test_from_manifest(tmp_path: Path) -> None:
    topology = Topology.from_dict(
        {"nxc_topology": 1, "constraints": [{"from": "client1", "to": "client2", "loss": "1%"}]}
    )
    s = cli_session(tmp_path, topology)
    result = CliRunner().invoke(netem, ["apply", "--from-manifest"], obj=lambda: s)
    assert result.exit_code == 0, result.output
    assert "(2 shaped pairs)" in result.output
    assert s.machines["client1"].batches()  # type: ignore[attr-defined]
    assert not s.machines["server1"].batches()  # type: ignore[attr-defined]


class _BackdoorNode:
    """NodeControl of a VM whose backdoor socket is ``path`` (served or not)."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path

    def transport(self) -> BackdoorTransport:
        return BackdoorTransport(self.path, self.name, connect_timeout=0.3, handshake_timeout=0.5)

    def is_running(self) -> bool:
        return True

    def console_tail(self, lines: int = 20) -> str:
        return ""


def test_unreachable_and_busy_nodes_are_one_clear_error(tmp_path: Path) -> None:
    """A node busy (another driver attached: QEMU accepts, nobody answers) or unreachable
    made netem crash with a TypeError (ConnectionLost rebuilt with one argument)."""
    busy = socket.socket(socket.AF_UNIX)
    busy.bind(str(tmp_path / "busy.sock"))
    busy.listen(1)  # connections are accepted by the kernel, never served
    try:
        paths = {"server1": "missing.sock", "client1": "busy.sock", "client2": "missing.sock"}
        ms = {
            name: Machine(
                name, "r", 1, _BackdoorNode(name, tmp_path / path), Logger(stream=io.StringIO())
            )
            for name, path in paths.items()
        }
        with pytest.raises(NxcError) as caught:
            ap.Netem(DEPLOYMENT, ms, TOPOLOGY).reset()
        message = str(caught.value)
        assert message.startswith("netem reset failed on 3 nodes: server1: cannot reach the node")
        assert "client1: cannot reach the node: client1: the backdoor at" in message
        assert "another nxc driver or shell may be attached" in message
        assert "client2: cannot reach the node: client2: backdoor socket" in message
        assert "not connectable" in message
    finally:
        busy.close()
