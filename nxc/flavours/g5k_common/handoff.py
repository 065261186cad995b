"""Handing nodes over to their role by kexec, all nodes at once.

For every node, from its standard environment (as the user; root through
``sudo-g5k`` unless already root):

1. a private staging directory in RAM (``/dev/shm``), so that no private key ever
   touches the node's disk;
2. the role's kernel + initrd: pushed over sftp, or read from a directory the nodes
   share with this machine (the NFS home) where they were copied once;
3. the node's own inputs (rendered agent inputs, deployment, private host key, the
   site addressing to keep) as a small cpio archive appended to the initrd —
   nothing secret on the kernel command line, and no size limit but memory;
4. ``kexec -l``, the staging directory removed, then a detached ``kexec -e``.

A node is deployed only when it answers ssh with its *new* host key, a boot id
other than the one its standard environment had, and the ready line of the
expected node and role. Every step is a fan-out: one node's failure is recorded
with what was last seen and never stops the others.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nxc.contracts import Deployment, Node
from nxc.flavours.g5k_common.cpio import Entry, newc_archive
from nxc.flavours.g5k_common.stdenv import NodeFacts
from nxc.parallel import fan_out
from nxc.transports.ssh import SshFleet
from nxc.wait import Attempt, PollExpired, poll

INPUT_DIR = "nxc-input"
SITE_NET = "site-net"  # the node's own addressing, kept across the kexec (agent input)
HOST_KEY = "hostkey"
Say = Callable[[str], None]


@dataclass
class Target:
    """One node to hand over, and what happened to it so far."""

    node: Node
    fqdn: str
    facts: NodeFacts
    kernel: Path
    initrd: Path
    params: str
    error: str | None = None
    staging: str | None = None
    boot_id: str | None = None  # the new one, once ready
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.node.name

    def fail(self, step: str, why: str) -> None:
        if self.error is None:
            self.error = f"{step}: {why.removeprefix(self.fqdn + ': ')}"


def node_archive(
    deployment: Deployment,
    target: Target,
    host_key: bytes,
    site_net: Sequence[str],
    initrd_size: int,
    private: Mapping[str, Path] | None = None,
) -> bytes:
    """Zero padding that aligns the archive after the role's initrd, then the archive.
    ``private``: more private input files of the node (name → file, e.g. ``sync``),
    0600 in the archive like the host key."""
    from nxc.runtime.node_inputs import render

    files = render(deployment, target.name).files
    entries = [Entry(INPUT_DIR, 0o700)]
    entries += [Entry(f"{INPUT_DIR}/{n}", 0o644, t.encode()) for n, t in sorted(files.items())]
    if site_net:
        entries.append(
            Entry(f"{INPUT_DIR}/{SITE_NET}", 0o644, ("\n".join(site_net) + "\n").encode())
        )
    for name, path in sorted((private or {}).items()):
        entries.append(Entry(f"{INPUT_DIR}/{name}", 0o600, path.read_bytes()))
    entries.append(Entry(f"{INPUT_DIR}/{HOST_KEY}", 0o600, host_key))
    pad = b"\0" * ((512 - initrd_size % 512) % 512)
    return pad + newc_archive(entries)


def kernel_params(role_params: str, node: Node, facts_cmdline: str) -> str:
    """The role's parameters, the node's own console settings, and which node this is."""
    consoles = [w for w in facts_cmdline.split() if w.startswith("console=")]
    params = [
        role_params.strip(),
        *consoles,
        f"nxc.node={node.name}",
        f"nxc.inputs=dir:/{INPUT_DIR}",
    ]
    return " ".join(p for p in params if p)


def shared_copy(source: Path, shared_dir: Path) -> Path:
    """Copy ``source`` into the shared directory once (content-named); its path there."""
    digest = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    target = shared_dir / f"{digest}-{source.name}"
    if target.exists() and target.stat().st_size == source.stat().st_size:
        return target
    shared_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    shutil.copyfile(source, partial)
    partial.chmod(0o644)
    partial.replace(target)
    return target


class Handoff:
    """Kexec a set of nodes into their roles (see the module documentation)."""

    def __init__(
        self,
        deployment: Deployment,
        targets: Sequence[Target],
        std: SshFleet,
        role_fleet: SshFleet,
        host_keys: Mapping[str, Path],
        *,
        say: Say,
        shared_dir: Path | None = None,
        work_dir: Path,
        console: Callable[[str], str] | None = None,
        step_timeout: float = 300.0,
        private: Mapping[str, Mapping[str, Path]] | None = None,
    ) -> None:
        self.private = private or {}
        self.work_dir = work_dir
        self.deployment = deployment
        self.targets = list(targets)
        self.std = std
        self.role_fleet = role_fleet
        self.host_keys = host_keys
        self.say = say
        self.shared_dir = shared_dir
        self.console = console or (lambda _fqdn: "")
        self.step_timeout = step_timeout
        self.timings: dict[str, float] = {}

    # -- helpers ------------------------------------------------------------------------

    def alive(self) -> list[Target]:
        return [t for t in self.targets if t.error is None]

    # -- the steps ------------------------------------------------------------------------

    def stage(self) -> None:
        stage_script = (
            'd=/dev/shm; [ -d "$d" ] && [ -w "$d" ] || d=${TMPDIR:-/tmp}; '
            'd="$d/nxc-{id}"; rm -rf "$d" && mkdir -m 700 "$d" && echo "$d"'
        ).replace("{id}", self.deployment.id)

        def one(target: Target) -> None:
            out = _checked(self.std, target, stage_script, 60)
            target.staging = out.strip().splitlines()[-1]

        self._each("staging directory", one)

    def push(self) -> None:
        """Kernel + initrd to every node (sftp), or once to the shared directory."""
        began = time.monotonic()
        if self.shared_dir is not None:
            self.say(f"copying kernels and initrds to {self.shared_dir} (shared with the nodes)")
            copies: dict[Path, Path] = {}
            for target in self.alive():
                for source in (target.kernel, target.initrd):
                    if source not in copies:
                        copies[source] = shared_copy(source, self.shared_dir)
                target.kernel, target.initrd = copies[target.kernel], copies[target.initrd]
        else:
            self.say(f"pushing kernel + initrd to {len(self.alive())} nodes (sftp)")

            def one(target: Target) -> None:
                assert target.staging is not None
                link = self.std[target.fqdn]
                link.put(target.kernel, f"{target.staging}/kernel")
                link.put(target.initrd, f"{target.staging}/initrd")

            self._each("push kernel + initrd", one)
        self.timings["push"] = time.monotonic() - began

    def load(self, site_net: Mapping[str, Sequence[str]]) -> None:
        """Per-node inputs appended to the initrd, then ``kexec -l``; staging removed."""
        began = time.monotonic()

        def one(target: Target) -> None:
            assert target.staging is not None
            archive = node_archive(
                self.deployment,
                target,
                self.host_keys[target.name].read_bytes(),
                site_net.get(target.name, ()),
                target.initrd.stat().st_size,
                self.private.get(target.name),
            )
            local = _private_temp(archive, self.work_dir)
            try:
                self.std[target.fqdn].put(local, f"{target.staging}/inputs")
            finally:
                local.unlink(missing_ok=True)
            kernel, initrd = self._paths(target)
            sudo = target.facts.root_prefix
            kexec = shlex.quote(target.facts.kexec or "kexec")
            d = shlex.quote(target.staging)
            # The staging directory holds the node's private host key: it goes, whatever
            # happens, once the kernel has (or has not) loaded it.
            script = (
                f"set -e; umask 077; trap 'rm -rf {d}' EXIT; "
                f"cat {initrd} {d}/inputs > {d}/initrd.node; "
                f"{sudo}{kexec} -l {kernel} --initrd={d}/initrd.node "
                f"--append={shlex.quote(target.params)}"
            )
            _checked(self.std, target, script, self.step_timeout)

        self._each("kexec -l", one)
        self.timings["load"] = time.monotonic() - began

    def _paths(self, target: Target) -> tuple[str, str]:
        if self.shared_dir is not None:
            return shlex.quote(str(target.kernel)), shlex.quote(str(target.initrd))
        assert target.staging is not None
        d = shlex.quote(target.staging)
        return f"{d}/kernel", f"{d}/initrd"

    def execute(self) -> None:
        """Detach ``kexec -e`` on every loaded node at once (ssh is cut by the kexec)."""

        def one(target: Target) -> None:
            kexec = shlex.quote(target.facts.kexec or "kexec")
            inner = f"(sleep 0.5; exec {kexec} -e) </dev/null >/dev/null 2>&1 &"
            _checked(self.std, target, f"{target.facts.root_prefix}sh -c {shlex.quote(inner)}", 60)

        self._each("kexec -e", one)
        self.timings["exec_at"] = time.monotonic()

    def wait_ready(self, timeout: float) -> None:
        """Until every kexec'ed node answers as its role with a new boot id (bounded)."""
        pending = {t.fqdn: t for t in self.alive()}
        last: dict[str, str] = {fqdn: "no answer yet" for fqdn in pending}
        total = len(pending)
        began = time.monotonic()
        check = "cat /run/nxc/ready 2>/dev/null; echo; cat /proc/sys/kernel/random/boot_id"

        def attempt(_remaining: float) -> Attempt[bool]:
            result = self.role_fleet.run(check, timeout=15, nodes=list(pending))
            for outcome in result:
                target = pending[outcome.node]
                if outcome.error is not None:
                    last[outcome.node] = outcome.error.removeprefix(outcome.node + ": ")
                    if "host key" in outcome.error:
                        self._maybe_back_in_stdenv(target)
                        if target.error is not None:
                            del pending[outcome.node]
                    continue
                verdict = _ready_verdict(target, outcome.stdout)
                if verdict is None:
                    target.timings["ready"] = time.monotonic()
                    del pending[outcome.node]
                    self.say(f"{total - len(pending)}/{total} nodes ready")
                else:
                    last[outcome.node] = verdict
            if not pending:
                return Attempt.ok(True)
            return Attempt.not_yet(", ".join(pending))

        try:
            poll("the nodes to come back as their roles", attempt, timeout, first=0.5, longest=2)
        except PollExpired:
            for fqdn, target in pending.items():
                tail = self.console(fqdn)
                shown = f"; console:\n{tail}" if tail else ""
                target.fail(
                    "not back after the kexec",
                    f"not ready {timeout:.0f}s after kexec (last: {last[fqdn]}){shown}",
                )
        self.timings["ready"] = time.monotonic() - began

    def _maybe_back_in_stdenv(self, target: Target) -> None:
        """A node answering with another host key may have rebooted into its standard
        environment (the role's kernel panicked): say so at once instead of waiting."""
        try:
            out = self.std[target.fqdn].run("cat /proc/sys/kernel/random/boot_id", timeout=10)
        except Exception:  # unreachable or still the old system: keep waiting
            return
        boot_id = out.output.strip()
        if out.status == 0 and boot_id and boot_id != target.facts.boot_id:
            tail = self.console(target.fqdn)
            shown = f"; console:\n{tail}" if tail else ""
            target.fail(
                "not back after the kexec",
                "the node rebooted into its standard environment instead of its role "
                f"(the role's kernel or initrd did not boot){shown}",
            )

    def _each(self, step: str, action: Callable[[Target], None]) -> None:
        todo = self.alive()
        for outcome in fan_out(action, todo, workers=64, prefix="nxc-g5k"):
            if outcome.error is not None:
                outcome.item.fail(step, str(outcome.error))


def _checked(fleet: SshFleet, target: Target, command: str, timeout: float) -> str:
    result = fleet[target.fqdn].run(command, timeout=timeout)
    if result.status != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(
            f"exit status {result.status}" + (f": {detail[-1][:200]}" if detail else "")
        )
    return result.output


def _ready_verdict(target: Target, text: str) -> str | None:
    """None when ``text`` shows the node ready as its role after the kexec; else why not."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    boot_id = lines[-1] if lines else ""
    ready = next((line for line in lines if line.startswith("nxc-ready ")), None)
    if boot_id == target.facts.boot_id:
        return "still the standard environment (same boot id)"
    if ready is None:
        return f"booted (boot id {boot_id}) but the agent is not ready yet"
    fields = dict(part.split("=", 1) for part in ready.split()[1:] if "=" in part)
    if fields.get("node") != target.name or fields.get("role") != target.node.role:
        return f"answers as {fields.get('node')} (role {fields.get('role')}), not {target.name}"
    if fields.get("boot_id") != boot_id:
        return "the ready line is from another boot"
    target.boot_id = boot_id
    return None


def _private_temp(data: bytes, directory: Path) -> Path:
    """A 0600 file in nxc's private runtime directory (it holds a private host key)."""
    import os
    import tempfile

    descriptor, name = tempfile.mkstemp(prefix="inputs-", dir=directory)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    return Path(name)
