"""Deploying through the API's deployments endpoint (Kadeploy), never its CLI.

One deployment per role and site (a deployment has one environment), submitted in
parallel and polled together until each reports per-node OK/KO, with a progress
line; nodes reported KO are deployed again (a new deployment of just those) up to
``retries`` times, then reported. Each deployment is in the ledger while it runs
(kind ``g5k-deployment``: releasing it cancels it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grid5000 import Grid5000

from nxc.g5k.client import call
from nxc.g5k.errors import G5kApiError, G5kError
from nxc.ledger import Ledger, ReleaseContext, ReleaseError, Resource
from nxc.wait import Attempt, PollExpired, poll

DEPLOYMENT_KIND = "g5k-deployment"
DONE = ("terminated", "error", "canceled")
Say = Callable[[str], None]


@dataclass
class Batch:
    """The nodes of one role on one site, and how their deployments went."""

    site: str
    role: str
    environment: str  # URL of the description
    pending: list[str]  # FQDNs still to deploy
    ok: list[str] = field(default_factory=list)
    ko: dict[str, str] = field(default_factory=dict)  # FQDN -> why
    attempts: int = 0
    uid: str | None = None  # the running deployment
    label: str = ""  # how progress names the batch (default: "role ROLE")

    @property
    def what(self) -> str:
        return self.label or f"role {self.role}"


class Kadeploy:
    def __init__(
        self, client: Grid5000, ledger: Ledger, owner: str, extra: Mapping[str, Any], say: Say
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.owner = owner
        self.extra = dict(extra)
        self.say = say

    def _site(self, site: str) -> Any:
        return call(f"site {site}", lambda: self.client.sites[site])

    def submit(self, batch: Batch, key: str) -> None:
        payload = {"nodes": list(batch.pending), "environment": batch.environment, "key": key}
        created = call(
            f"site {batch.site}: deploying {batch.what}",
            lambda: self._site(batch.site).deployments.create(payload),
        )
        batch.uid = str(created.uid)
        batch.attempts += 1
        self.ledger.record(
            DEPLOYMENT_KIND,
            f"{batch.site}/{batch.uid}",
            f"Kadeploy deployment {batch.uid} ({batch.what})",
            self.owner,
            site=batch.site,
            uid=batch.uid,
            **self.extra,
        )

    def status(self, batch: Batch) -> dict[str, Any]:
        assert batch.uid is not None
        uid = batch.uid
        found = call(
            f"site {batch.site}: deployment {uid}",
            lambda: self._site(batch.site).deployments[uid],
        )
        return dict(found.attributes)

    def deploy(self, batches: Sequence[Batch], key: str, *, retries: int, timeout: float) -> None:
        """Deploy every batch (KO nodes again, up to ``retries`` times); bounded."""
        for batch in batches:
            self.submit(batch, key)
        began = time.monotonic()
        seen: dict[int, str] = {}  # batch index -> its deployment and state

        def check(_remaining: float) -> Attempt[bool]:
            for index, batch in enumerate(batches):
                if batch.uid is None:
                    continue
                document = self.status(batch)
                state = str(document.get("status"))
                seen[index] = f"{batch.uid} {state}"
                if state not in DONE:
                    continue
                self._conclude(batch, document)
                if batch.ko and batch.attempts <= retries:
                    again = sorted(batch.ko)
                    self.say(
                        f"Kadeploy: {len(again)} node(s) of {batch.what} KO "
                        f"({', '.join(again)}): deploying again "
                        f"({batch.attempts}/{retries} retries)"
                    )
                    batch.pending, batch.ko = again, {}
                    self.submit(batch, key)
            waited = time.monotonic() - began
            self.say(
                "Kadeploy: "
                + ", ".join(f"{b.what}: {seen.get(i, '?')}" for i, b in enumerate(batches))
                + f"; {sum(len(b.ok) for b in batches)} node(s) OK; waited {waited:.0f}s"
            )
            if all(b.uid is None for b in batches):
                return Attempt.ok(True)
            return Attempt.not_yet("; ".join(seen.values()))

        try:
            poll("Kadeploy deployments", check, timeout, first=1.0, factor=1.5, longest=10)
        except PollExpired:
            for batch in batches:
                if batch.uid is not None:
                    for fqdn in batch.pending:
                        batch.ko[fqdn] = f"deployment {batch.uid} not done after {timeout:g}s"
                    self.cancel(batch)

    def _conclude(self, batch: Batch, document: Mapping[str, Any]) -> None:
        state = str(document.get("status"))
        result = document.get("result") or {}
        for fqdn in batch.pending:
            outcome = result.get(fqdn) if isinstance(result, dict) else None
            if state == "terminated" and isinstance(outcome, dict) and outcome.get("state") == "OK":
                batch.ok.append(fqdn)
            elif state == "terminated":
                batch.ko[fqdn] = f"Kadeploy reported KO (deployment {batch.uid})"
            else:
                output = str(document.get("output") or "").strip().splitlines()
                detail = f": {output[-1][:200]}" if output else ""
                batch.ko[fqdn] = f"deployment {batch.uid} ended {state}{detail}"
        batch.uid, batch.pending = None, []

    def cancel(self, batch: Batch) -> None:
        if batch.uid is None:
            return
        uid = batch.uid
        with contextlib.suppress(G5kError):  # gone or done: nothing to cancel
            site = self._site(batch.site)
            call(f"deployment {uid}: cancel", lambda: site.deployments.delete(uid))
        batch.uid = None


class DeploymentKind:
    """Release a ``g5k-deployment``: cancel it if it still runs."""

    name = DEPLOYMENT_KIND

    def release(self, resource: Resource, ctx: ReleaseContext) -> str | None:
        from nxc.flavours.g5k_common.reservation import reserver_from

        site, uid = resource.extra.get("site"), resource.extra.get("uid")
        try:
            reserver = reserver_from(resource.extra)
            site_api = call(f"site {site}", lambda: reserver.client.sites[site])
            state = call(f"deployment {uid}", lambda: site_api.deployments[uid]).status
            if state in DONE:
                return None
            call(f"deployment {uid}: cancel", lambda: site_api.deployments.delete(uid))
        except G5kApiError as exc:
            if exc.status == 404:
                return None
            raise ReleaseError(str(exc)) from None
        except G5kError as exc:
            raise ReleaseError(str(exc)) from None
        return f"cancelled Kadeploy deployment {uid}"
