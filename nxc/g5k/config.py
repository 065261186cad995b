"""Grid'5000 API credentials, and the python-grid5000 client built from them.

Where credentials come from, first match wins:

1. an explicit config file (``load_config(path)``, later ``--g5k-config FILE``);
2. ``NXC_G5K_CONFIG``: the path of such a file;
3. ``NXC_G5K_USER`` + ``NXC_G5K_PASSWORD`` (and optionally ``NXC_G5K_URI``,
   ``NXC_G5K_VERIFY_SSL`` = ``0``/``1``/a CA bundle path);
4. ``~/.python-grid5000.yaml`` (python-grid5000's own file: ``uri``, ``username``,
   ``password``, ``verify_ssl``, ``timeout``; or ``sslcert``/``sslkey``/``ssluser``).

Nothing found, or a file that cannot be read, is an error: python-grid5000's
``from_yaml`` would instead fall back silently to an anonymous client aimed at the
real API, so nxc never calls it. The password is never printed, logged or stored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from grid5000 import Grid5000

from nxc.fsutil import read_text
from nxc.g5k.errors import CredentialsError

DEFAULT_URI = "https://api.grid5000.fr/stable"
DEFAULT_FILE = ".python-grid5000.yaml"
ENV_CONFIG = "NXC_G5K_CONFIG"
ENV_URI = "NXC_G5K_URI"
ENV_USER = "NXC_G5K_USER"
ENV_PASSWORD = "NXC_G5K_PASSWORD"
ENV_VERIFY = "NXC_G5K_VERIFY_SSL"
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class G5kConfig:
    uri: str
    username: str  # the Grid'5000 login (jobs are filtered on it)
    password: str | None = field(default=None, repr=False)
    verify_ssl: bool | str = True
    timeout: float = DEFAULT_TIMEOUT
    sslcert: str | None = None
    sslkey: str | None = None
    source: str = ""  # where the credentials came from, for messages

    def client(self) -> Grid5000:
        """A python-grid5000 client built with explicit arguments (never from_yaml)."""
        if self.sslcert is not None:
            return Grid5000(
                uri=self.uri,
                verify_ssl=self.verify_ssl,
                timeout=self.timeout,
                sslcert=self.sslcert,
                sslkey=self.sslkey,
                ssluser=self.username,
            )
        return Grid5000(
            uri=self.uri,
            username=self.username,
            password=self.password,
            verify_ssl=self.verify_ssl,
            timeout=self.timeout,
        )


def _verify(value: Any, where: str) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes"):
            return True
        if lowered in ("0", "false", "no"):
            return False
        if value.strip():
            return value.strip()  # a CA bundle path
    raise CredentialsError(f"{where}: verify_ssl must be true, false or a CA bundle path")


def from_file(path: Path) -> G5kConfig:
    text = read_text(path, "Grid'5000 config", CredentialsError)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CredentialsError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(doc, dict):
        raise CredentialsError(f"{path}: expected a mapping with uri, username, password")
    timeout = doc.get("timeout", DEFAULT_TIMEOUT)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise CredentialsError(f"{path}: timeout must be a positive number of seconds")
    common: dict[str, Any] = {
        "uri": str(doc.get("uri") or DEFAULT_URI),
        "verify_ssl": _verify(doc.get("verify_ssl", True), str(path)),
        "timeout": float(timeout),
        "source": str(path),
    }
    if doc.get("sslcert"):
        user = doc.get("ssluser") or doc.get("username")
        if not isinstance(user, str) or not user:
            raise CredentialsError(f"{path}: sslcert needs ssluser (the Grid'5000 login)")
        key = doc.get("sslkey")
        return G5kConfig(
            username=user, sslcert=str(doc["sslcert"]), sslkey=str(key) if key else None, **common
        )
    user, password = doc.get("username"), doc.get("password")
    if not isinstance(user, str) or not user or not isinstance(password, str) or not password:
        raise CredentialsError(f"{path}: needs username and password (or sslcert and ssluser)")
    return G5kConfig(username=user, password=password, **common)


def from_environment(env: Mapping[str, str]) -> G5kConfig:
    user, password = env.get(ENV_USER, ""), env.get(ENV_PASSWORD, "")
    if not password:
        raise CredentialsError(f"{ENV_USER} is set but {ENV_PASSWORD} is empty or missing")
    verify = _verify(env[ENV_VERIFY], ENV_VERIFY) if env.get(ENV_VERIFY) else True
    return G5kConfig(
        uri=env.get(ENV_URI) or DEFAULT_URI,
        username=user,
        password=password,
        verify_ssl=verify,
        source=f"{ENV_USER}/{ENV_PASSWORD}",
    )


def load_config(
    path: Path | None = None, env: Mapping[str, str] | None = None, home: Path | None = None
) -> G5kConfig:
    """Find credentials (see the module docstring for the order) or fail in one line."""
    env = os.environ if env is None else env
    if path is not None:
        return from_file(path)
    if env.get(ENV_CONFIG):
        return from_file(Path(env[ENV_CONFIG]).expanduser())
    if env.get(ENV_USER):
        return from_environment(env)
    default = (home or Path.home()) / DEFAULT_FILE
    if default.exists():
        return from_file(default)
    raise CredentialsError(
        f"no Grid'5000 credentials: write {default} (uri, username, password), "
        f"set {ENV_USER} and {ENV_PASSWORD}, or give a config file"
    )
