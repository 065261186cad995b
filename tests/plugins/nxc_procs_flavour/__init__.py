"""A third-party flavour, as a test sees one: registered through the ``nxc.flavours``
entry point of its own distribution (the ``*.dist-info`` next to this package), with
nothing in nxc knowing about it.

Each node is a real local process (``sleep``) that prints the agent's ready line to
its log; commands run on this host in the node's own directory. The flavour records
two resource kinds of its own: ``procs.token`` (its release writes a file the test
checks) and ``procs.fragile`` (its release fails while ``fail-release`` exists in
``$NXC_TEST_PROCS_DIR``), to test that ``nxc stop`` releases every kind it is given.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from nxc.contracts import Deployment, Manifest
from nxc.driver.local import LocalNodeControl
from nxc.ledger import Kind, ReleaseContext, ReleaseError, Resource, process_start_time
from nxc.parallel import each
from nxc.project import Project
from nxc.runtime.contract import RuntimeBase, RuntimeContext
from nxc.runtime.node import Capability
from nxc.runtime.options import FlavourOptions, Option
from nxc.wait import Attempt, poll


def _test_dir() -> Path:
    return Path(os.environ["NXC_TEST_PROCS_DIR"])


class TokenKind:
    name = "procs.token"

    def release(self, resource: Resource, ctx: ReleaseContext) -> str | None:
        marker = _test_dir() / f"released-{resource.ident}"
        if marker.exists():
            return None
        marker.write_text("released\n")
        return f"released token {resource.ident}"


class FragileKind:
    name = "procs.fragile"

    def release(self, resource: Resource, ctx: ReleaseContext) -> str | None:
        if (_test_dir() / "fail-release").exists():
            raise ReleaseError("the fragile resource refuses to go (fail-release is set)")
        (_test_dir() / f"released-{resource.ident}").write_text("released\n")
        return f"released fragile {resource.ident}"


class ProcNode(LocalNodeControl):
    flavour = "procs"
    capabilities = frozenset({Capability.CONSOLE})

    def __init__(self, name: str, root: Path, pid: int, start: int | None, log: Path) -> None:
        super().__init__(name, root, env={**os.environ, "NXC_NODE": name})
        self.pid, self.start_time, self.log = pid, start, log

    def is_running(self) -> bool:
        return process_start_time(self.pid) == self.start_time

    def console_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text().splitlines()[-lines:])


class ProcsRuntime(RuntimeBase):
    name: ClassVar[str] = "procs"
    summary: ClassVar[str] = "test flavour: one local process per node"
    options: ClassVar[tuple[Option, ...]] = (
        Option("greeting", "What each node prints when it starts.", default="hello"),
        Option(
            "launch-delay",
            "Seconds between node launches (to interrupt a start).",
            type="float",
            minimum=0,
            default=0.0,
        ),
    )

    def check_host(self, manifest: Manifest, options: FlavourOptions) -> None:
        if not os.environ.get("NXC_TEST_PROCS_DIR"):
            from nxc.errors import NxcError

            raise NxcError("flavour procs needs NXC_TEST_PROCS_DIR")

    def acquire(self, ctx: RuntimeContext, deployment: Deployment) -> Deployment:
        ctx.ledger.record("procs.token", deployment.id, "test token", owner=self.name)
        ctx.ledger.record("procs.fragile", f"{deployment.id}-fragile", "fragile", owner=self.name)
        ctx.state.save({"nodes": {}})
        return replace(deployment, nodes=[replace(n, ssh_host=None) for n in deployment.nodes])

    def launch(self, ctx: RuntimeContext, deployment: Deployment) -> None:
        greeting = ctx.options.get("greeting")
        delay = ctx.options.get("launch-delay", default=0.0)
        for node in deployment.nodes:
            root = ctx.runtime_dir / node.name
            root.mkdir()
            log = ctx.run_dir / f"{node.name}.log"
            line = f"{greeting}; nxc-ready node={node.name} role={node.role} boot_id=x"
            process = subprocess.Popen(
                ["sh", "-c", f'echo "{line}"; exec sleep 3600'],
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            res = ctx.ledger.record_process(process.pid, f"process of {node.name}")
            entry = {
                "pid": process.pid,
                "start": res.start_time,
                "root": str(root),
                "log": str(log),
            }
            ctx.state.update(lambda s, n=node.name, e=entry: s["nodes"].__setitem__(n, e))
            time.sleep(delay)

        def ready(node_name: str) -> None:
            log = ctx.run_dir / f"{node_name}.log"

            def check(_remaining: float) -> Attempt[bool]:
                text = log.read_text() if log.exists() else ""
                return Attempt.ok(True) if "nxc-ready" in text else Attempt.not_yet(text)

            poll(f"{node_name} to be ready", check, ctx.ready_timeout)

        each(ready, [n.name for n in deployment.nodes], "waiting for nodes")

    def nodes(self, project: Project, deployment: Deployment) -> Mapping[str, ProcNode]:
        state: dict[str, Any] = self.state(project).load()
        return {
            name: ProcNode(name, Path(e["root"]), e["pid"], e["start"], Path(e["log"]))
            for name, e in state["nodes"].items()
        }

    def resource_kinds(self) -> Mapping[str, Kind]:
        return {k.name: k for k in (TokenKind(), FragileKind())}
