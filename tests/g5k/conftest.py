"""The Grid'5000 double in process (frozen clock: tests move time, never sleep) and the
real python-grid5000 client, built with explicit arguments."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from grid5000 import Grid5000

from nxc.g5k.reserve import Reserver
from nxc.testbeds.g5k_double import Clock, G5kDouble, Timings

USERS = {"alice": "secret", "bob": "hunter2"}
TIMINGS = Timings(schedule_s=5, launch_s=5, finish_s=2, deploy_s=30)


@pytest.fixture
def double() -> Iterator[G5kDouble]:
    with G5kDouble(USERS, clock=Clock(frozen=True), timings=TIMINGS) as g5k:
        yield g5k


def client_for(g5k: G5kDouble, user: str | None = "alice", password: str | None = None) -> Grid5000:
    if user is None:
        return Grid5000(uri=g5k.url, timeout=10)
    return Grid5000(uri=g5k.url, username=user, password=password or USERS[user], timeout=10)


@pytest.fixture
def alice(double: G5kDouble) -> Grid5000:
    return client_for(double, "alice")


@pytest.fixture
def bob(double: G5kDouble) -> Grid5000:
    return client_for(double, "bob")


def reserver_for(g5k: G5kDouble, user: str = "alice") -> Reserver:
    """A Reserver whose sleeps move the double's clock (a wait costs no real time)."""
    return Reserver(
        client_for(g5k, user),
        user,
        sleep=lambda seconds: g5k.advance(seconds),
        monotonic=g5k.clock.now,
        now=g5k.clock.now,
    )


@pytest.fixture
def reserver(double: G5kDouble) -> Reserver:
    return reserver_for(double)
