"""The double on the wire (raw HTTP), its control path and its command line."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from nxc.testbeds.g5k_double import Clock, G5kDouble, default_inventory, parse_bindings
from nxc.testbeds.g5k_double.server import BindError

from .conftest import TIMINGS, USERS

AUTH = ("alice", "secret")


def control(g5k: G5kDouble, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(
        method, f"{g5k.origin}/_control{path}", json=body, headers=g5k.control_header, timeout=10
    )


def test_content_types_prefixes_and_errors(double: G5kDouble) -> None:
    ok = requests.get(f"{double.origin}/stable//sites//rennes/", timeout=10)
    assert ok.status_code == 200 and ok.json()["uid"] == "rennes"
    assert ok.headers["Content-Type"].startswith("application/json")
    assert requests.get(f"{double.origin}/3.0/sites", timeout=10).json()["total"] == 2
    missing = requests.get(f"{double.origin}/stable/sites/rennes/jobs/12", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("text/plain")
    assert missing.text.strip() == "Couldn't find OAR::Job with 'job_id'=12"
    assert requests.get(f"{double.origin}/v4/sites", timeout=10).status_code == 404
    assert requests.put(f"{double.origin}/stable/sites", timeout=10).status_code == 405
    bad = requests.post(
        f"{double.origin}/stable/sites/rennes/jobs", data="{", auth=AUTH, timeout=10
    )
    assert bad.status_code == 400 and "not valid JSON" in bad.text
    wrong = requests.get(f"{double.origin}/stable/sites", auth=("alice", "x"), timeout=10)
    assert wrong.status_code == 401 and "Basic" in wrong.headers["WWW-Authenticate"]


def test_submission_validation_texts(double: G5kDouble) -> None:
    url = f"{double.origin}/stable/sites/rennes/jobs"
    answer = requests.post(url, json={"command": "x", "reservation": 5}, auth=AUTH, timeout=10)
    assert answer.status_code == 400 and answer.text.strip() == "`reservation` should be a String."
    answer = requests.post(
        url, json={"command": "x", "resources": "{foo=1}/nodes=1"}, auth=AUTH, timeout=10
    )
    assert answer.status_code == 400 and "unknown property 'foo'" in answer.text
    created = requests.post(url, json={"command": "x"}, auth=AUTH, timeout=10)
    assert created.status_code == 201
    uid = created.json()["uid"]
    assert created.headers["Location"] == f"{double.origin}/stable/sites/rennes/jobs/{uid}"
    gone = requests.delete(f"{url}/{uid}", auth=AUTH, timeout=10)
    assert gone.status_code == 202 and gone.text == ""


def test_control_path_is_guarded(double: G5kDouble) -> None:
    for headers in ({}, {"X-G5k-Double-Token": "guess"}):
        answer = requests.post(f"{double.origin}/_control/reset", headers=headers, timeout=10)
        assert answer.status_code == 403


def test_control_path(double: G5kDouble) -> None:
    assert control(double, "GET", "/timings").json()["launch_s"] == TIMINGS.launch_s
    assert control(double, "POST", "/timings", {"launch_s": 1}).json()["launch_s"] == 1
    assert control(double, "POST", "/timings", {"launch_s": "fast"}).status_code == 400
    url = f"{double.origin}/stable/sites/rennes/jobs"
    uid = requests.post(url, json={"command": "x"}, auth=AUTH, timeout=10).json()["uid"]
    before = control(double, "GET", "/clock").json()["now"]
    after = control(double, "POST", "/clock", {"advance": 6}).json()["now"]
    assert after == before + 6
    job = requests.get(f"{url}/{uid}", timeout=10).json()
    assert job["state"] == "running"  # schedule 5 s + launch 1 s
    assert (
        control(double, "POST", f"/jobs/rennes/{uid}", {"state": "error"}).json()["state"]
        == "error"
    )
    assert requests.get(f"{url}/{uid}", timeout=10).json()["state"] == "error"
    # faults: the next request answers 502 (retried by clients), then all is well
    control(double, "POST", "/faults", {"status": 502, "count": 1})
    assert requests.get(f"{double.origin}/stable/sites", timeout=10).status_code == 502
    assert requests.get(f"{double.origin}/stable/sites", timeout=10).status_code == 200
    assert control(double, "POST", "/faults", {"status": 418}).status_code == 400
    assert control(double, "POST", "/ko", {"nodes": ["grisou-1.nancy.grid5000.fr"]}).json() == [
        "grisou-1.nancy.grid5000.fr"
    ]
    assert control(double, "POST", "/ko", {"nodes": ["mars-1"]}).status_code == 400
    served = control(double, "GET", "/requests").json()
    assert [s["status"] for s in served][-2:] == [502, 200]
    state = control(double, "GET", "/state").json()
    assert state["jobs"][0]["state"] == "error" and state["ko_nodes"]
    assert control(double, "POST", "/join", {"timeout": 1}).json() == {"done": True}
    reset = control(double, "POST", "/reset").json()
    assert reset["jobs"] == [] and reset["ko_nodes"] == [] and reset["timings"]["launch_s"] == 5
    assert requests.get(f"{url}/{uid}", timeout=10).status_code == 404


def test_deployer_failure_and_environment_fetch_errors(tmp_path: Path) -> None:
    def broken(request: object) -> dict[str, bool]:
        raise RuntimeError("kexec refused")

    with G5kDouble(USERS, clock=Clock(frozen=True), timings=TIMINGS, deployer=broken) as g5k:
        url = f"{g5k.origin}/stable/sites/rennes"
        job = requests.post(
            f"{url}/jobs", json={"command": "x", "types": ["deploy"]}, auth=AUTH, timeout=10
        ).json()
        g5k.advance(10)
        nodes = requests.get(f"{url}/jobs/{job['uid']}", timeout=10).json()["assigned_nodes"]
        spec = {"nodes": nodes, "environment": "debian12-min"}
        dep = requests.post(f"{url}/deployments", json=spec, auth=AUTH, timeout=10).json()
        g5k.join_deployers()
        g5k.advance(TIMINGS.deploy_s)
        done = requests.get(f"{url}/deployments/{dep['uid']}", timeout=10).json()
        assert done["status"] == "error" and done["output"] == "RuntimeError: kexec refused"
        assert "result" not in done
        for env, problem in (
            ("http://127.0.0.1:9/env.yaml", "Error fetching the image description file: URLError"),
            ("ftp://example.org/env.yaml", "ftp protocol not supported yet"),
        ):
            spec = {"nodes": nodes, "environment": env}
            answer = requests.post(f"{url}/deployments", json=spec, auth=AUTH, timeout=10)
            assert answer.status_code == 500 and problem in answer.text


def test_bound_nodes_only(tmp_path: Path) -> None:
    bindings = parse_bindings(
        "Host grisou-3 grisou-5\n  HostName 127.0.0.1\n  Port 2222\n", default_inventory()
    )
    with G5kDouble(USERS, clock=Clock(frozen=True), bindings=bindings) as g5k:
        url = f"{g5k.origin}/stable/sites/nancy/jobs"
        too_many = requests.post(
            url, json={"command": "x", "resources": "nodes=3"}, auth=AUTH, timeout=10
        )
        assert too_many.status_code == 400 and "not enough resources" in too_many.text
        uid = requests.post(
            url, json={"command": "x", "resources": "nodes=2"}, auth=AUTH, timeout=10
        ).json()["uid"]
        g5k.advance(20)
        nodes = requests.get(f"{url}/{uid}", timeout=10).json()["assigned_nodes"]
        assert nodes == ["grisou-3.nancy.grid5000.fr", "grisou-5.nancy.grid5000.fr"]
        status = requests.get(f"{g5k.origin}/stable/sites/nancy/status", timeout=10).json()
        assert status["nodes"]["grisou-1.nancy.grid5000.fr"]["hard"] == "dead"
        bound = control(g5k, "GET", "/state").json()["bindings"]
        assert bound["grisou-3.nancy.grid5000.fr"]["port"] == 2222


def test_refuses_to_listen_beyond_loopback() -> None:
    with pytest.raises(BindError, match=re.escape("127.0.0.1 only")):
        G5kDouble(USERS, host="0.0.0.0").start()


def test_command_line(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:secret\n# a comment\nbob:hunter2\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nxc.testbeds.g5k_double", "--port", "0", "--users-file",
         str(users), "--timings", "schedule_s=0,launch_s=0", "--control-token", "t0k"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("g5k-double: serving http://127.0.0.1:"), first
        url = first.split()[-1]
        assert "alice, bob" in proc.stdout.readline()
        assert proc.stdout.readline().strip().endswith("X-G5k-Double-Token: t0k")
        job = requests.post(
            f"{url}/sites/nancy/jobs", json={"command": "x"}, auth=("bob", "hunter2"), timeout=10
        )
        assert job.status_code == 201
        assert (
            requests.get(f"{url}/sites/nancy/jobs/{job.json()['uid']}", timeout=10).json()["state"]
            == "running"
        )
        origin = url.rsplit("/", 1)[0]
        assert requests.get(
            f"{origin}/_control/state", headers={"X-G5k-Double-Token": "t0k"}, timeout=10
        ).ok
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--users", "alice"], "users are given as USER:PASSWORD"),
        ([], "give at least one user"),
        (["--users", "a:b", "--host", "0.0.0.0"], "127.0.0.1 only"),
        (["--users", "a:b", "--inventory", "/nonexistent.yaml"], "cannot read the inventory"),
        (["--users", "a:b", "--timings", "warp=1"], "unknown timing 'warp'"),
    ],
)
def test_command_line_errors(args: list[str], problem: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nxc.testbeds.g5k_double", "--port", "0", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("g5k-double: error: ") and problem in done.stderr
    assert "Traceback" not in done.stderr
