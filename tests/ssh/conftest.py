"""A lab of 20 real sshd nodes shared by the ssh tests that do not stop nodes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nxc.transports.ssh import SshFleet, SshSettings
from tests.fixtures.sshd_netns import SshdCluster, require_lab


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdCluster]:
    """20 sshd nodes (``node-I.nxc.test``) plus a jump host, for the whole session."""
    require_lab()
    with SshdCluster(tmp_path_factory.mktemp("sshd-lab"), 20, jump=True) as cluster:
        yield cluster


@pytest.fixture
def settings(lab: SshdCluster) -> SshSettings:
    """Settings a user would write: the lab's ssh config and known_hosts, nothing else."""
    return SshSettings(lab.known_hosts, lab.ssh_config)


@pytest.fixture
def fleet(lab: SshdCluster, settings: SshSettings) -> Iterator[SshFleet]:
    with SshFleet([node.name for node in lab.nodes], settings) as nodes:
        yield nodes
