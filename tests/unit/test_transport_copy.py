"""put/get of the Transport protocol: the local transport, and the shell-only copy
the backdoor uses (run here over a real ``sh`` through the local transport)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nxc.driver.local import LocalTransport
from nxc.runtime.shellcopy import UPLOAD_CHUNK, get_over_shell, put_over_shell
from nxc.runtime.transport import TransportError


@pytest.fixture
def node(tmp_path: Path) -> LocalTransport:
    root = tmp_path / "node"
    root.mkdir()
    return LocalTransport(root)


def test_local_put_get_keep_mode(node: LocalTransport, tmp_path: Path) -> None:
    source = tmp_path / "s"
    source.write_bytes(b"\x00data\xff")
    source.chmod(0o741)
    node.put(source, "copy")
    assert (node.cwd / "copy").read_bytes() == b"\x00data\xff"
    assert stat.S_IMODE((node.cwd / "copy").stat().st_mode) == 0o741
    node.get("copy", tmp_path / "back")
    assert stat.S_IMODE((tmp_path / "back").stat().st_mode) == 0o741
    with pytest.raises(TransportError, match="missing"):
        node.get("missing", tmp_path / "x")
    assert sorted(p.name for p in node.cwd.iterdir()) == ["copy"]


def test_shell_copy_round_trip_in_several_pieces(node: LocalTransport, tmp_path: Path) -> None:
    source = tmp_path / "big"
    source.write_bytes(os.urandom(UPLOAD_CHUNK * 2 + 17))
    source.chmod(0o750)
    target = node.cwd / "target"
    target.write_text("old")
    put_over_shell(node.run, "n1", source, str(target))
    assert target.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert sorted(p.name for p in node.cwd.iterdir()) == ["target"]  # no staging left
    back = tmp_path / "back"
    get_over_shell(node.run, "n1", str(target), back)
    assert back.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(back.stat().st_mode) == 0o750


def test_shell_copy_errors_name_node_and_path(node: LocalTransport, tmp_path: Path) -> None:
    with pytest.raises(TransportError, match=r"^n1: cannot copy .*/nope to /x: No such file"):
        put_over_shell(node.run, "n1", tmp_path / "nope", "/x")
    (tmp_path / "f").write_text("f")
    with pytest.raises(TransportError, match=r"^n1: creating .*/no/dir/f\.nxc-put-"):
        put_over_shell(node.run, "n1", tmp_path / "f", str(tmp_path / "no" / "dir" / "f"))
    with pytest.raises(TransportError, match=r"^n1: cannot copy /no/such: no such file"):
        get_over_shell(node.run, "n1", "/no/such", tmp_path / "g")
    with pytest.raises(TransportError, match="not a regular file"):
        get_over_shell(node.run, "n1", str(tmp_path), tmp_path / "g")
