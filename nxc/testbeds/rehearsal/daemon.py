"""The rehearsal testbed's long-lived process (``python -m nxc.testbeds.rehearsal.daemon
DIR``): starts the site network and the nodes, serves the API double bound to them,
and reboots nodes into their standard environment when
their job ends, as Grid'5000 does. Every process it starts is in the testbed's
ledger the moment it exists; ``nxc g5k rehearsal down`` releases them all."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

from nxc.flavours.vm_ramdisk.runtime import start_vde_switch
from nxc.fsutil import atomic_write
from nxc.ledger import Ledger
from nxc.parallel import fan_out
from nxc.testbeds.g5k_double.backend import Backend
from nxc.testbeds.g5k_double.binding import load_bindings
from nxc.testbeds.g5k_double.clock import Timings
from nxc.testbeds.g5k_double.inventory import default_inventory
from nxc.testbeds.g5k_double.jobs import Job
from nxc.testbeds.g5k_double.server import HttpService
from nxc.testbeds.rehearsal.deployer import KexecDeployer
from nxc.testbeds.rehearsal.layout import Layout, Settings
from nxc.testbeds.rehearsal.vms import RehearsalVm, vm_argv
from nxc.tools import require_tool

BOOT_TIMEOUT = 240.0


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


class Testbed:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.settings = Settings.load(layout.settings)
        self.ledger = Ledger(layout.ledger)
        self.stopping = threading.Event()
        self.vms: dict[str, RehearsalVm] = {}
        self.locks: dict[str, threading.Lock] = {}
        self.resets = ThreadPoolExecutor(max_workers=16, thread_name_prefix="reset")
        self.backend: Backend | None = None

    def start_nodes(self) -> None:
        qemu = require_tool("qemu-system-x86_64")
        vde_switch = require_tool("vde_switch")
        self.layout.run.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.layout.root / "logs").mkdir(mode=0o700, exist_ok=True)
        log("starting the site network (VDE switch)")
        start_vde_switch(vde_switch, self.layout.switch, self.layout.root / "logs", self.ledger)
        user_keys = self.layout.user_key.with_suffix(".pub").read_text().strip()
        for spec in self.settings.nodes:
            argv = vm_argv(qemu, self.layout, self.settings, spec, user_keys)
            vm = RehearsalVm(spec, argv, self.layout)
            vm.launch(self.ledger)
            self.vms[spec.fqdn] = vm
            self.locks[spec.fqdn] = threading.Lock()
            log(f"{spec.short}: QEMU started (pid {vm.pid}, ssh on 127.0.0.1:{spec.ssh_port})")
        for outcome in fan_out(lambda vm: vm.wait_ready(BOOT_TIMEOUT), list(self.vms.values())):
            if outcome.error is not None:
                raise RuntimeError(str(outcome.error))
            log(f"{outcome.item.spec.short}: standard environment up (boot id {outcome.value})")

    def on_freed(self, job: Job) -> None:
        """A job ended: its nodes reboot into their standard environment (OAR would
        not hand them out again before they are back)."""
        assert self.backend is not None
        fqdns = {n.fqdn for n in job.allocation.nodes if n.fqdn in self.vms}
        self.backend.set_absent(fqdns, True)
        for fqdn in fqdns:
            self.resets.submit(self._reboot, fqdn, job.uid)

    def _reboot(self, fqdn: str, uid: int) -> None:
        vm = self.vms[fqdn]
        try:
            with self.locks[fqdn]:
                vm.reset()
                vm.wait_ready(BOOT_TIMEOUT)
        except Exception as exc:  # the node stays absent; the log says why
            log(f"{vm.spec.short}: reboot after job {uid} failed: {exc}")
            return
        log(f"{vm.spec.short}: back in its standard environment after job {uid}")
        assert self.backend is not None
        with self.backend.lock:
            self.backend.set_absent({fqdn}, False)

    def serve(self) -> None:
        inventory = default_inventory()
        bindings = load_bindings(self.layout.ssh_config, inventory)
        password = self.layout.password_file.read_text().strip()
        token = self.layout.token_file.read_text().strip()
        timings = Timings()
        timings.update(self.settings.timings)
        deployer = KexecDeployer(self.layout, self.vms, self.locks, log)
        self.backend = Backend(
            inventory,
            {self.settings.user: password},
            timings=timings,
            bindings=bindings,
            deployer=deployer,
            on_freed=self.on_freed,
        )
        api = HttpService(self.backend, "127.0.0.1", self.settings.api_port, token)
        api.start()
        host, port = api.address
        ready = {
            "api": f"http://{host}:{port}/stable",
            "nodes": {fqdn: vm.boot_id for fqdn, vm in self.vms.items()},
        }
        atomic_write(self.layout.ready, json.dumps(ready, indent=2) + "\n", 0o600)
        log(f"serving the API double on {ready['api']}")
        try:
            while not self.stopping.wait(0.5):
                with self.backend.lock:
                    self.backend.tick()  # jobs end at their walltime even if nobody asks
        finally:
            api.stop()
            self.resets.shutdown(wait=False, cancel_futures=True)

    def stop_nodes(self) -> None:
        for vm in self.vms.values():
            if vm.running() and vm.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    import os

                    os.kill(vm.pid, signal.SIGTERM)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m nxc.testbeds.rehearsal.daemon CONFIG_DIR", file=sys.stderr)
        return 2
    testbed = Testbed(Layout(Path(argv[0])))

    def stop(_signum: int, _frame: FrameType | None) -> None:
        testbed.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        testbed.start_nodes()
        if not testbed.stopping.is_set():
            testbed.serve()
    except Exception as exc:
        log(f"error: {type(exc).__name__}: {exc}")
        return 1
    finally:
        testbed.stop_nodes()
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
