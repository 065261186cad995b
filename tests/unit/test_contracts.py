from __future__ import annotations

import json
from pathlib import Path

import pytest

from nxc.contracts import Deployment, Manifest
from nxc.errors import ContractError
from nxc.expand import expand
from tests.conftest import sample_manifest


def test_manifest_loads_and_resolves_relative_artifacts(manifest_file: Path) -> None:
    manifest = Manifest.load(manifest_file)
    assert manifest.composition == "demo"
    assert list(manifest.roles) == ["server", "client"]
    assert manifest.roles["client"].quantity == 2
    assert manifest.roles["client"].kernel == manifest_file.parent / "kernel"
    manifest.require_boot_artifacts()


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match=r"missing\.json: manifest file not found"):
        Manifest.load(tmp_path / "missing.json")


def test_malformed_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text('{"nxc_manifest": 1,\n "roles": }')
    with pytest.raises(ContractError, match=r"manifest\.json: malformed JSON at line 2"):
        Manifest.load(path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("composition"), r"\(top level\): 'composition' is a required property"),
        (lambda d: d.update(flavour="Bad_Flavour"), r"flavour: 'Bad_Flavour' does not match"),
        (lambda d: d["roles"]["client"].update(quantity=-1), r"roles\.client\.quantity: -1"),
        (lambda d: d["roles"]["client"].update(colour="red"), r"roles\.client: Additional prop"),
        (lambda d: d.update(nxc_manifest=7), r"nxc_manifest 7 is not supported"),
        (lambda d: d.pop("nxc_manifest"), r"field 'nxc_manifest' is missing"),
        (lambda d: d["roles"].update({"Bad_Name": {"quantity": 1}}), r"roles: 'Bad_Name' does not"),
    ],
)
def test_schema_errors_name_the_field(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    document = sample_manifest(tmp_path)
    mutate(document)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ContractError, match=message) as info:
        Manifest.load(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_missing_artifact_is_reported(tmp_path: Path) -> None:
    document = sample_manifest(tmp_path)
    document["roles"]["client"]["initrd"] = "nope"
    manifest = Manifest.from_dict(document, tmp_path / "manifest.json")
    with pytest.raises(ContractError, match=r"roles\.client\.initrd: .*nope does not exist"):
        manifest.require_boot_artifacts()


def test_deployment_round_trip(manifest_file: Path) -> None:
    manifest = Manifest.load(manifest_file)
    deployment = expand(manifest, {}, "demo-abc123", ["ssh-ed25519 AAAA test"])
    again = Deployment.from_dict(json.loads(deployment.to_json()))
    assert again == deployment


def test_deployment_rejects_bad_mac(manifest_file: Path) -> None:
    manifest = Manifest.load(manifest_file)
    document = expand(manifest, {}, "demo-abc123", ["ssh-ed25519 AAAA t"]).to_dict()
    document["nodes"][0]["mac"] = "52:54:00:zz:00:01"
    with pytest.raises(ContractError, match=r"nodes\.0\.mac"):
        Deployment.from_dict(document)
