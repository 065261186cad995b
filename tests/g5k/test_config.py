"""Where Grid'5000 credentials come from, and how their absence is reported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nxc.g5k.config import DEFAULT_URI, load_config
from nxc.g5k.errors import CredentialsError
from nxc.g5k.reserve import Reserver
from nxc.testbeds.g5k_double import G5kDouble


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_default_file(tmp_path: Path) -> None:
    write(
        tmp_path / ".python-grid5000.yaml", "username: alice\npassword: s3cret\nverify_ssl: false\n"
    )
    config = load_config(env={}, home=tmp_path)
    assert (config.uri, config.username, config.password) == (DEFAULT_URI, "alice", "s3cret")
    assert config.verify_ssl is False and config.source.endswith(".python-grid5000.yaml")
    assert "s3cret" not in repr(config)


def test_precedence_explicit_file_then_env_file_then_env_vars(tmp_path: Path) -> None:
    write(tmp_path / ".python-grid5000.yaml", "username: home\npassword: p\n")
    explicit = write(
        tmp_path / "explicit.yaml", "uri: http://x/stable\nusername: ex\npassword: p\n"
    )
    named = write(tmp_path / "named.yaml", "username: named\npassword: p\ntimeout: 5\n")
    env = {
        "NXC_G5K_CONFIG": str(named),
        "NXC_G5K_USER": "envuser",
        "NXC_G5K_PASSWORD": "pw",
        "NXC_G5K_URI": "http://127.0.0.1:1/stable",
    }
    assert load_config(explicit, env=env, home=tmp_path).username == "ex"
    assert load_config(env=env, home=tmp_path).username == "named"
    assert load_config(env=env, home=tmp_path).timeout == 5.0
    del env["NXC_G5K_CONFIG"]
    config = load_config(env=env, home=tmp_path)
    assert (config.username, config.uri) == ("envuser", "http://127.0.0.1:1/stable")
    assert load_config(env={}, home=tmp_path).username == "home"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("username: alice\n", "needs username and password"),
        ("- a\n- b\n", "expected a mapping"),
        ("username: [\n", "not valid YAML"),
        ("username: a\npassword: b\ntimeout: -1\n", "timeout must be a positive number"),
        ("username: a\npassword: b\nverify_ssl: ''\n", "verify_ssl must be"),
        ("sslcert: /c.pem\n", "sslcert needs ssluser"),
    ],
)
def test_bad_files(tmp_path: Path, content: str, problem: str) -> None:
    path = write(tmp_path / "g5k.yaml", content)
    with pytest.raises(CredentialsError, match=problem) as caught:
        load_config(path, env={})
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_missing_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"no Grid'5000 credentials: write .*NXC_G5K_USER"):
        load_config(env={}, home=tmp_path)
    with pytest.raises(CredentialsError, match=re.escape("nope.yaml: Grid'5000 config not found")):
        load_config(tmp_path / "nope.yaml", env={})
    (tmp_path / ".python-grid5000.yaml").mkdir()  # exists but cannot be read as a file
    with pytest.raises(CredentialsError, match="Grid'5000 config is a directory, not a file"):
        load_config(env={}, home=tmp_path)
    with pytest.raises(CredentialsError, match="NXC_G5K_PASSWORD is empty or missing"):
        load_config(env={"NXC_G5K_USER": "alice"}, home=tmp_path)


def test_verify_and_certificate_settings(tmp_path: Path) -> None:
    env = {"NXC_G5K_USER": "a", "NXC_G5K_PASSWORD": "b", "NXC_G5K_VERIFY_SSL": "/etc/ca.pem"}
    assert load_config(env=env).verify_ssl == "/etc/ca.pem"
    env["NXC_G5K_VERIFY_SSL"] = "0"
    assert load_config(env=env).verify_ssl is False
    path = write(tmp_path / "c.yaml", "sslcert: /c.pem\nsslkey: /k.pem\nssluser: alice\n")
    config = load_config(path, env={})
    client = config.client()
    assert client.username is None and client.client_cert == ("/c.pem", "/k.pem")
    assert client.default_ssl_user == "alice" and config.username == "alice"


def test_client_from_config_talks_to_the_double(double: G5kDouble) -> None:
    env = {"NXC_G5K_USER": "alice", "NXC_G5K_PASSWORD": "secret", "NXC_G5K_URI": double.url}
    config = load_config(env=env)
    client = config.client()
    assert client._uri == double.url and client.timeout == 60.0
    assert Reserver(client, config.username).find("rennes", "nothing") is None
    assert double.served[-1].user == "alice"
