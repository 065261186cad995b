"""The Kadeploy side of the double: deployments, their state machine, the deployer seam.

A deployment is accepted (201, ``processing``) when its nodes all belong to a
running ``deploy`` job of the user and its environment resolves (a registered name,
or an http(s) URL of a kaenv YAML, fetched as Kadeploy would). The *deployer* —
the seam where a test plugs what "deploying" means (nothing, or a real kexec on
bound machines) — then runs in a thread; the deployment is done once the deployer
returned and ``deploy_s`` passed on the double's clock. Nodes marked KO by the
control path fail whatever the deployer says.

    processing --> terminated (result: per node OK/KO) | error (deployer raised) | canceled
"""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from nxc.testbeds.g5k_double.binding import SshEndpoint
from nxc.testbeds.g5k_double.clock import Timings
from nxc.testbeds.g5k_double.errors import ApiError, bad_request, forbidden, not_found
from nxc.testbeds.g5k_double.inventory import Site

STATUSES = ("waiting", "processing", "terminated", "error", "canceled")
OPTIONAL_KEYS = (
    "version", "arch", "vlan", "partition_label", "partition_number", "block_device",
    "reformat_tmp", "disable_disk_partitioning", "disable_bootloader_install",
    "ignore_nodes_deploying", "reboot_classical_timeout", "reboot_kexec_timeout",
)  # fmt: skip
INVALID = "The deployment you are trying to submit is not valid: "


@dataclass(frozen=True)
class DeployRequest:
    """What a deployer is asked to do."""

    uid: str
    site: str
    user: str
    nodes: tuple[str, ...]  # FQDNs, without the nodes forced KO
    environment: Mapping[str, Any]  # kaenv description
    kernel_params: str
    key: str | None  # public key text given with the deployment
    endpoints: Mapping[str, SshEndpoint]  # bound nodes among ``nodes``
    cancelled: threading.Event  # set when the deployment is canceled
    registered: str | None = None  # the environment's name, when one of the site's own

    def __hash__(self) -> int:
        return hash(self.uid)


class Deployer(Protocol):
    """Deploys ``request.nodes``; returns per-node success (a missing node is KO)."""

    def __call__(self, request: DeployRequest) -> Mapping[str, bool]: ...


def deploy_everything(request: DeployRequest) -> Mapping[str, bool]:
    """The default deployer: every node comes back fine."""
    return dict.fromkeys(request.nodes, True)


@dataclass
class Deployment:
    uid: str
    site: str
    user: str
    nodes: tuple[str, ...]
    environment: str  # as given (name or URL)
    options: dict[str, Any]
    key_url: str | None
    created_at: float
    due_at: float
    status: str = "processing"
    updated_at: float = 0.0
    result: dict[str, dict[str, Any]] | None = None
    output: str | None = None
    worker: threading.Thread | None = None
    outcome: Mapping[str, bool] | None = None
    failure: str | None = None
    forced_ko: frozenset[str] = frozenset()
    cancelled: threading.Event = field(default_factory=threading.Event)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "uid": self.uid,
            "site_uid": self.site,
            "user_uid": self.user,
            "environment": self.environment,
            "key": self.key_url,
            "nodes": list(self.nodes),
            "status": self.status,
            "created_at": int(self.created_at),
            "updated_at": int(self.updated_at or self.created_at),
            "result": self.result,
            "output": self.output,
            **self.options,
        }
        return {key: value for key, value in data.items() if value is not None}


EnvFetcher = Callable[[str], Mapping[str, Any]]


def fetch_description(url: str) -> Mapping[str, Any]:
    """Read a kaenv YAML over http(s), as Kadeploy does with an anonymous environment."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        document = yaml.safe_load(answer.read())
    if not isinstance(document, dict):
        raise ValueError("the description is not a YAML mapping")
    return document


class DeploymentTable:
    def __init__(
        self,
        timings: Timings,
        deployer: Deployer | None = None,
        fetch: EnvFetcher = fetch_description,
    ) -> None:
        self.timings = timings
        self.deployer: Deployer = deployer or deploy_everything
        self.fetch = fetch
        self.items: dict[tuple[str, str], Deployment] = {}
        self.ko_nodes: set[str] = set()

    def get(self, site: str, uid: str) -> Deployment:
        found = self.items.get((site, uid))
        if found is None:
            raise not_found(f"Couldn't find Grid5000::Deployment with ID={uid}")
        return found

    def select(self, site: str, query: Mapping[str, str]) -> list[Deployment]:
        found = [
            d
            for d in self.items.values()
            if d.site == site
            and (not query.get("user") or d.user == query["user"])
            and (not query.get("status") or d.status == query["status"])
        ]
        # newest first; among equal times, the later submission first
        return list(reversed(sorted(found, key=lambda d: d.created_at)))

    def _environment(self, site: Site, ref: str) -> Mapping[str, Any]:
        scheme = ref.split("://", 1)[0] if "://" in ref else ""
        if scheme in ("http", "https"):
            try:
                return self.fetch(ref)
            except (OSError, urllib.error.URLError, ValueError, yaml.YAMLError) as exc:
                raise ApiError(
                    500,
                    "Cannot launch deployment: Error fetching the image description file:"
                    f" {type(exc).__name__}, {exc}",
                ) from None
        if scheme:
            raise ApiError(
                500,
                "Cannot launch deployment: Error fetching the image description file:"
                f" {scheme} protocol not supported yet",
            )
        name = ref.split("@", 1)[0]
        env = site.environment(name)
        if env is None:
            raise ApiError(
                500, f"Cannot launch deployment: Kadeploy error: environment '{name}' not found"
            )
        return env.description

    def create(
        self,
        site: Site,
        user: str | None,
        payload: Mapping[str, Any],
        now: float,
        deployable: set[str],
        bindings: Mapping[str, SshEndpoint],
        files_url: str,
    ) -> Deployment:
        if user is None:
            raise forbidden()
        nodes = payload.get("nodes")
        env_ref = payload.get("environment")
        problems = []
        if not env_ref:
            problems.append("Environment can't be blank")
        if not isinstance(nodes, list) or not nodes or not all(isinstance(n, str) for n in nodes):
            problems.append("Nodes must be a non-empty list of node FQDN")
        if problems:
            raise bad_request(INVALID + "; ".join(problems))
        if not isinstance(env_ref, str):
            raise bad_request(INVALID + "Environment must be a String")
        assert isinstance(nodes, list)
        refused = sorted(set(nodes) - deployable)
        if refused:
            raise ApiError(
                500,
                "Cannot launch deployment: Kadeploy error: you are not allowed to deploy on "
                f"{', '.join(refused)} (not in a running deploy job of {user})",
            )
        environment = self._environment(site, env_ref)
        key = payload.get("key")
        key_text = key if isinstance(key, str) and "://" not in key else None
        key_url = key if isinstance(key, str) and key_text is None else None
        if key_text is not None:
            # The API stores a key given as text in a file and passes its URL on.
            digest = hashlib.sha1(key_text.encode()).hexdigest()
            key_url = f"{files_url}/{user}-key-{digest}"
        deployment = Deployment(
            uid=f"D-{uuid.uuid4()}",
            site=site.uid,
            user=user,
            nodes=tuple(nodes),
            environment=env_ref,
            options={k: payload[k] for k in OPTIONAL_KEYS if payload.get(k) is not None},
            key_url=key_url,
            created_at=now,
            due_at=now + self.timings.deploy_s,
            forced_ko=frozenset(self.ko_nodes & set(nodes)),
        )
        boot = environment.get("boot") if isinstance(environment.get("boot"), dict) else {}
        request = DeployRequest(
            uid=deployment.uid,
            site=site.uid,
            user=user,
            nodes=tuple(n for n in nodes if n not in deployment.forced_ko),
            environment=environment,
            kernel_params=str((boot or {}).get("kernel_params") or ""),
            key=key_text,
            endpoints={n: bindings[n] for n in nodes if n in bindings},
            cancelled=deployment.cancelled,
            registered=None if "://" in env_ref else env_ref.split("@", 1)[0],
        )
        self.items[(site.uid, deployment.uid)] = deployment
        deployment.worker = threading.Thread(
            target=self._run,
            args=(deployment, request),
            name=f"g5k-double-{deployment.uid}",
            daemon=True,
        )
        deployment.worker.start()
        return deployment

    def _run(self, deployment: Deployment, request: DeployRequest) -> None:
        try:
            deployment.outcome = dict(self.deployer(request)) if request.nodes else {}
        except Exception as exc:  # the deployer's failure is the deployment's error
            deployment.failure = f"{type(exc).__name__}: {exc}"

    def cancel(self, site: str, uid: str, user: str | None, now: float) -> None:
        if user is None:
            raise forbidden()
        deployment = self.get(site, uid)
        if deployment.user != user:
            raise forbidden()
        if deployment.status == "processing":
            deployment.cancelled.set()
            deployment.status, deployment.updated_at = "canceled", now

    def tick(self, now: float) -> None:
        for d in self.items.values():
            if d.status != "processing" or now < d.due_at:
                continue
            if d.worker is not None and d.worker.is_alive():
                continue  # the deployer is still at work: Kadeploy has not reported yet
            self._conclude(d, max(d.due_at, d.created_at))

    def _conclude(self, d: Deployment, at: float) -> None:
        d.updated_at = at
        if d.failure is not None:
            d.status, d.output = "error", d.failure
            return
        outcome = d.outcome or {}
        d.result = {
            node: {
                "macro": None,
                "micro": None,
                "state": "OK" if outcome.get(node, False) and node not in d.forced_ko else "KO",
            }
            for node in d.nodes
        }
        d.status = "terminated"

    def force(self, site: str, uid: str, status: str, now: float) -> Deployment:
        if status not in STATUSES:
            raise bad_request(
                f"unknown deployment status {status!r} (known: {', '.join(STATUSES)})"
            )
        d = self.get(site, uid)
        if status == "terminated":
            d.outcome = d.outcome or dict.fromkeys(d.nodes, True)
            d.failure = None
            self._conclude(d, now)
        else:
            d.status, d.updated_at = status, now
            if status == "error":
                d.output = d.output or "forced into error by the test double"
            if status == "canceled":
                d.cancelled.set()
        return d

    def join(self, timeout: float) -> bool:
        """Wait (bounded) for every running deployer; True when none is left running."""
        deadline = time.monotonic() + timeout
        workers = [d.worker for d in self.items.values() if d.worker is not None]
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return not any(w.is_alive() for w in workers)
