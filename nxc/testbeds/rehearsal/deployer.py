"""The rehearsal's Kadeploy: deploying an environment on a node really boots it.

For each node, as Kadeploy would: reboot the node (here: reset its VM into the
standard environment, which stands for Kadeploy's deployment kernel), put the
environment in place and boot its kernel + initrd with its ``kernel_params``
(here: by kexec over ssh as root). What Kadeploy writes onto the deployed partition
besides the image — the user's key in root's ``authorized_keys`` and, through
Grid'5000's postinstall, the node's own ssh host key and network settings — is
handed over as a ``/kadeploy`` tree in an archive appended to the initrd. The node
counts as deployed (OK) once it answers ssh as root with its own host key and a new
boot id; otherwise KO.

A registered environment (one of the site's own, such as ``debian12-min``: what
g5k-ramdisk deploys in a deploy job) stands for the node's standard environment:
the node reboots into it (a new boot id) and the deployment's key is added to
root's ``authorized_keys``, as Kadeploy would leave it.
"""

from __future__ import annotations

import shlex
import tarfile
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from nxc.flavours.g5k_common.cpio import Entry, newc_archive
from nxc.flavours.g5k_common.stdenv import PROBE, parse_probe
from nxc.parallel import fan_out
from nxc.testbeds.g5k_double.deployments import DeployRequest
from nxc.testbeds.rehearsal.layout import Layout
from nxc.testbeds.rehearsal.vms import RehearsalVm
from nxc.transports.ssh import SshSettings, SshTransport

KADEPLOY_TREE = "kadeploy"
DEPLOY_TIMEOUT = 240.0
Log = Callable[[str], None]


def _member(tar: tarfile.TarFile, path: str) -> tarfile.TarInfo:
    wanted = path.lstrip("/")
    for info in tar.getmembers():
        if info.name.lstrip("./") == wanted and info.isfile():
            return info
    raise ValueError(f"the image has no file {path}")


class KexecDeployer:
    """The double's deployer for the rehearsal testbed (see the module documentation)."""

    def __init__(
        self,
        layout: Layout,
        vms: Mapping[str, RehearsalVm],
        locks: Mapping[str, threading.Lock],
        log: Log,
    ) -> None:
        self.layout = layout
        self.vms = vms
        self.locks = locks
        self.log = log
        self.cache = Path(tempfile.mkdtemp(prefix="kadeploy-", dir=layout.run))

    def settings(self) -> SshSettings:
        return SshSettings(
            self.layout.known_hosts,
            config=[self.layout.ssh_config],
            user="root",
            identity=self.layout.admin_key,
            connect_timeout=5,
        )

    def _boot_files(self, environment: Mapping[str, object]) -> tuple[Path, Path]:
        image = environment.get("image")
        boot = environment.get("boot")
        if not isinstance(image, dict) or not isinstance(boot, dict):
            raise ValueError("the environment has no image or boot section")
        url = str(image.get("file", ""))
        key = str(abs(hash(url)))
        kernel, initrd = self.cache / f"{key}.kernel", self.cache / f"{key}.initrd"
        if kernel.exists() and initrd.exists():
            return kernel, initrd
        tarball = self.cache / f"{key}.tar"
        with urllib.request.urlopen(url, timeout=60) as answer, open(tarball, "wb") as out:
            while chunk := answer.read(1 << 20):
                out.write(chunk)
        with tarfile.open(tarball) as tar:
            for path, target in (
                (str(boot.get("kernel")), kernel),
                (str(boot.get("initrd")), initrd),
            ):
                source = tar.extractfile(_member(tar, path))
                assert source is not None
                target.write_bytes(source.read())
        tarball.unlink()
        return kernel, initrd

    def __call__(self, request: DeployRequest) -> Mapping[str, bool]:
        if request.registered is not None:
            outcomes = fan_out(
                lambda fqdn: self._deploy_registered(fqdn, request), request.nodes, workers=64
            )
        else:
            kernel, initrd = self._boot_files(request.environment)
            outcomes = fan_out(
                lambda fqdn: self._deploy(fqdn, kernel, initrd, request),
                request.nodes,
                workers=64,
            )
        result = {}
        for outcome in outcomes:
            if outcome.error is not None:
                self.log(f"deployment {request.uid}: {outcome.item}: KO ({outcome.error})")
            result[outcome.item] = outcome.error is None and bool(outcome.value)
        return result

    def _deploy(self, fqdn: str, kernel: Path, initrd: Path, request: DeployRequest) -> bool:
        vm = self.vms[fqdn]
        with self.locks[fqdn]:
            vm.reset()
            vm.wait_ready(180)
            if request.cancelled.is_set():
                return False
            with SshTransport(fqdn, self.settings()) as node:
                facts = parse_probe(fqdn, node.run(PROBE, timeout=60).output)
                admin = self.layout.admin_key.with_suffix(".pub").read_text()
                keys = f"{(request.key or '').strip()}\n{admin.strip()}\n"
                tree = [
                    Entry(KADEPLOY_TREE, 0o755),
                    Entry(f"{KADEPLOY_TREE}/root", 0o700),
                    Entry(f"{KADEPLOY_TREE}/root/.ssh", 0o700),
                    Entry(f"{KADEPLOY_TREE}/root/.ssh/authorized_keys", 0o600, keys.encode()),
                    Entry(f"{KADEPLOY_TREE}/etc", 0o755),
                    Entry(f"{KADEPLOY_TREE}/etc/ssh", 0o755),
                    Entry(
                        f"{KADEPLOY_TREE}/etc/ssh/ssh_host_ed25519_key",
                        0o600,
                        self.layout.host_key(vm.spec.short).read_bytes(),
                    ),
                    Entry(
                        f"{KADEPLOY_TREE}/site-net",
                        0o644,
                        "".join(f"{line}\n" for line in facts.site_net()).encode(),
                    ),
                ]
                pad = b"\0" * ((512 - initrd.stat().st_size % 512) % 512)
                archive = self.cache / f"{vm.spec.short}.{request.uid}.cpio"
                archive.write_bytes(pad + newc_archive(tree))
                archive.chmod(0o600)
                stage = f"/dev/shm/kadeploy-{request.uid}"
                node.run(f"rm -rf {stage} && mkdir -m 700 {stage}", timeout=30)
                node.put(kernel, f"{stage}/kernel")
                node.put(initrd, f"{stage}/initrd")
                node.put(archive, f"{stage}/tree")
                archive.unlink()
                params = shlex.quote(request.kernel_params)
                load = node.run(
                    f"set -e; cat {stage}/initrd {stage}/tree > {stage}/all; "
                    f"kexec -l {stage}/kernel --initrd={stage}/all --append={params}; "
                    f"rm -rf {stage}; (sleep 0.5; exec kexec -e) </dev/null >/dev/null 2>&1 &",
                    timeout=120,
                )
                if load.status != 0:
                    raise RuntimeError(f"kexec -l: {load.stderr.decode(errors='replace')[-200:]}")
            return self._wait_deployed(fqdn, facts.boot_id, request)

    def _deploy_registered(self, fqdn: str, request: DeployRequest) -> bool:
        """The standard environment, rebooted, with the deployment's key for root."""
        vm = self.vms[fqdn]
        key = (request.key or "").strip()
        if not key or "\n" in key:
            raise ValueError("the deployment gives no single public key")
        with self.locks[fqdn]:
            old_boot = vm.boot_id
            vm.reset()
            new_boot = vm.wait_ready(180)
            if request.cancelled.is_set() or new_boot == old_boot:
                return False
            with SshTransport(fqdn, self.settings()) as node:
                added = node.run(
                    f"printf '%s\\n' {shlex.quote(key)} >> /root/.ssh/authorized_keys", timeout=30
                )
                if added.status != 0:
                    raise RuntimeError(f"authorized_keys: {added.stderr.decode(errors='replace')}")
        self.log(f"deployment {request.uid}: {fqdn}: {request.registered} deployed")
        return True

    def _wait_deployed(self, fqdn: str, old_boot: str, request: DeployRequest) -> bool:
        deadline = time.monotonic() + DEPLOY_TIMEOUT
        while time.monotonic() < deadline and not request.cancelled.is_set():
            try:
                with SshTransport(fqdn, self.settings()) as node:
                    out = node.run("cat /proc/sys/kernel/random/boot_id", timeout=10)
                    if out.status == 0 and out.output.strip() not in ("", old_boot):
                        return True
            except Exception:  # not up yet: Kadeploy keeps trying until its timeout
                pass
            time.sleep(1)
        return False
