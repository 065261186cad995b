"""The secret scanner: real keys in every form a record could carry them, and no
false alarm on what records hold."""

from __future__ import annotations

import base64
import io
import subprocess
from pathlib import Path

import pytest

from nxc.records.secrets import scan_stream, scan_tree


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("key") / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_bytes()


def _found(data: bytes) -> list[str]:
    return [f.what for f in scan_stream(io.BytesIO(data), "f")]


def test_private_keys_in_every_form(key: bytes) -> None:
    assert "a private key block" in _found(key)
    assert _found(b"console: nxc.hostkey=b64:" + base64.b64encode(key)) == [
        "a base64-encoded private key file"
    ]
    body = b"".join(key.splitlines()[1:-1])
    assert _found(body) == ["an OpenSSH private key body"]
    rsa = (
        subprocess.run(["openssl", "genrsa", "1024"], capture_output=True, check=False).stdout
        or b"-----BEGIN RSA PRIVATE KEY-----\nMIICXAIBAAKBgQC7\n"
    )
    assert "a private key block" in _found(rsa)


def test_a_key_across_chunk_boundaries_is_found(key: bytes) -> None:
    for padding in (1 << 20) - 10, (1 << 20) - 2000, 3 << 20:
        found = scan_stream(io.BytesIO(b"x" * padding + b"\n" + key), "big")
        assert found and found[0].offset == padding + 1 and found[0].line == 2


@pytest.mark.parametrize(
    "text",
    [
        b'{"password": "hunter22"}',
        b"password: hunter22\n",
        b"NXC_G5K_PASSWORD=hunter22",
        b"https://alice:hunter22@api.grid5000.fr/stable/",
        b"Authorization: Basic YWxpY2U6aHVudGVyMjI=",
        b"token ghp_" + b"a" * 36,
    ],
)
def test_credentials_are_found(text: bytes) -> None:
    assert _found(text), text


@pytest.mark.parametrize(
    "text",
    [
        b'"password": null',
        b"password = self.password",
        b"password: ${G5K_PASSWORD}",
        b'"authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA nxc-demo"]',
        b'"host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB node1-host"',
        b"nxc-ready node=node1 role=node index=1 boot_id=1b2c",
        b"a" * (2 << 20),
    ],
)
def test_no_false_alarm(text: bytes) -> None:
    assert _found(text) == []


def test_nxc_templates_are_clean() -> None:
    compositions = Path(__file__).resolve().parents[2] / "compositions"
    assert list(scan_tree(compositions)) == []
