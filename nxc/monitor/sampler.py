"""Where a node's metrics come from, found once per node with one command.

In order of preference:

1. ``http``: a node_exporter answering on 127.0.0.1:9100 (NixOS images run one, see
   ``nix/modules/base.nix``; any image may), fetched with curl or wget on the node;
2. ``exec``: the ``nxc-metrics`` sampler installed in the image (selftest images, the
   NixOS agent module), run as is;
3. ``install``: neither, but the node has awk: the driver writes ``nxc-metrics`` to
   ``/run/nxc/bin/`` once (the fallback that works on any image with sh and awk).

Application endpoints (``monitor.scrape(...)``) are fetched with the node's curl or wget.
Every command here is one shell command sent through the node's transport: nothing is
started on the node beyond what the scrape itself runs.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from nxc.errors import NxcError
from nxc.paths import AGENT_DIR

__all__ = [
    "INSTALLED_SAMPLER",
    "NODE_EXPORTER_URL",
    "DetectedSource",
    "NoMetricsSource",
    "detect_command",
    "fetch_command",
    "install_command",
    "parse_detection",
    "sampler_script",
]

NODE_EXPORTER_PORT = 9100
NODE_EXPORTER_URL = f"http://127.0.0.1:{NODE_EXPORTER_PORT}/metrics"
# Where the driver installs the sampler on a node whose image lacks it (tmpfs on the
# test images: gone after a reboot, when detection runs again).
INSTALLED_SAMPLER = "/run/nxc/bin/nxc-metrics"


class NoMetricsSource(NxcError):
    """The node has no node_exporter, no nxc-metrics and no awk to run one."""


@dataclass(frozen=True)
class DetectedSource:
    """What detection found on a node: ``kind`` (http, exec, install) and how to fetch."""

    kind: str
    command: str  # the scrape command (empty for "install" until installed)
    detail: str  # for people: the URL, or the sampler's path
    fetcher: str  # curl, wget or "" (for application endpoints)


def sampler_script() -> str:
    """The text of ``nxc-metrics`` shipped with this nxc."""
    return (AGENT_DIR / "nxc-metrics").read_text()


# One command; prints key=value lines. The grep checks the answer really is node
# metrics (not some other server on 9100). No -T/--max-time on wget: Debian's busybox
# wget crashes with it; the transport's timeout bounds the command instead.
_DETECT = r"""
u=__URL__
f=
if command -v curl >/dev/null 2>&1; then f=curl
elif command -v wget >/dev/null 2>&1; then f=wget; fi
echo "fetch=$f"
if [ "$f" = curl ] && curl -fsS -m 3 "$u" 2>/dev/null | grep -q '^node_cpu_seconds_total'; then
  echo source=http
elif [ "$f" = wget ] && wget -q -O - "$u" 2>/dev/null | grep -q '^node_cpu_seconds_total'; then
  echo source=http
elif p=$(command -v nxc-metrics 2>/dev/null) && [ -n "$p" ]; then
  echo "source=exec $p"
elif [ -x __INSTALLED__ ]; then
  echo "source=exec __INSTALLED__"
elif command -v awk >/dev/null 2>&1; then
  echo source=install
else
  echo source=none
fi
"""


def detect_command(installed: str = INSTALLED_SAMPLER) -> str:
    """The detection command (``installed``: where an installed sampler would be)."""
    return (
        _DETECT.replace("__URL__", shlex.quote(NODE_EXPORTER_URL))
        .replace("__INSTALLED__", shlex.quote(installed))
        .strip()
        + "\n"
    )


def fetch_command(fetcher: str, url: str) -> str:
    """The node-side command printing ``url``'s body, failing on HTTP errors."""
    if fetcher == "curl":
        return f"curl -fsS {shlex.quote(url)}"
    if fetcher == "wget":
        return f"wget -q -O - {shlex.quote(url)}"
    raise NoMetricsSource(f"cannot fetch {url}: the node has neither curl nor wget")


def parse_detection(node: str, output: str, installed: str = INSTALLED_SAMPLER) -> DetectedSource:
    """Read what :func:`detect_command` printed; raise :class:`NoMetricsSource` for none."""
    values: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    fetcher = values.get("fetch", "")
    source = values.get("source", "")
    kind, _, path = source.partition(" ")
    if kind == "http":
        return DetectedSource(
            "http",
            fetch_command(fetcher, NODE_EXPORTER_URL),
            f"node_exporter at {NODE_EXPORTER_URL}",
            fetcher,
        )
    if kind == "exec" and path:
        return DetectedSource("exec", shlex.quote(path), f"nxc-metrics at {path}", fetcher)
    if kind == "install":
        return DetectedSource("install", "", f"nxc-metrics installed at {installed}", fetcher)
    if kind == "none":
        raise NoMetricsSource(
            f"{node}: no metrics source: no node_exporter on :{NODE_EXPORTER_PORT}, "
            "no nxc-metrics and no awk to run it"
        )
    raise NoMetricsSource(
        f"{node}: unexpected answer to metrics detection: {output.strip()[:200]!r}"
    )


def install_command(path: str = INSTALLED_SAMPLER) -> str:
    """Write the sampler to ``path`` on the node atomically (one command)."""
    quoted = shlex.quote(path)
    temporary = shlex.quote(path + ".new")
    script = shlex.quote(sampler_script())
    return (
        f'mkdir -p "$(dirname {quoted})" && printf %s {script} > {temporary} '
        f"&& chmod 755 {temporary} && mv -f {temporary} {quoted}"
    )
