"""The export reader against real `nix-store --export` output and real NAR hashes."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

from nxc.records.nar import NarError, nar_hash_hex, read_export

pytestmark = pytest.mark.nix

NIX = ["nix", "--extra-experimental-features", "nix-command"]


@pytest.fixture(scope="module")
def store_tree(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store path with every NAR node kind: files, an executable, a symlink,
    nested and empty directories, an empty file, names needing sorting."""
    root = tmp_path_factory.mktemp("nar") / "nxc-records-nar-test"
    (root / "b" / "nested" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "a.txt").write_text("hello\n")
    (root / "b" / "nested" / "deeper" / "z").write_bytes(os.urandom(70000))
    (root / "empty").write_bytes(b"")
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o755)
    (root / "link").symlink_to("a.txt")
    (root / "B-upper").write_text("sorted before a\n")
    added = subprocess.run(
        ["nix-store", "--add", str(root)], capture_output=True, text=True, check=True
    )
    return added.stdout.strip()


def _export(*paths: str) -> bytes:
    return subprocess.run(["nix-store", "--export", *paths], capture_output=True, check=True).stdout


def _path_info(*paths: str) -> dict[str, dict[str, object]]:
    out = subprocess.run(
        [*NIX, "path-info", "--json", *paths], capture_output=True, text=True, check=True
    ).stdout
    return {str(item["path"]): item for item in json.loads(out)}


def test_hashes_match_nix(store_tree: str) -> None:
    (exported,) = list(read_export(io.BytesIO(_export(store_tree))))
    info = _path_info(store_tree)[store_tree]
    assert exported.path == store_tree
    assert exported.nar_sha256 == nar_hash_hex(str(info["narHash"]))
    assert exported.nar_size == info["narSize"]
    assert exported.references == () and exported.deriver is None


def test_several_paths_with_references(built_selftest: Path) -> None:
    manifest = json.loads(
        (built_selftest / "result-selftest-vm-ramdisk" / "manifest.json").read_text()
    )
    out = str((built_selftest / "result-selftest-vm-ramdisk").resolve())
    paths = subprocess.run(
        ["nix-store", "-qR", out], capture_output=True, text=True, check=True
    ).stdout.split()
    data = _export(*paths)
    info = _path_info(*paths)
    found = list(read_export(io.BytesIO(data)))
    assert {p.path for p in found} == set(paths)
    for item in found:
        assert item.nar_sha256 == nar_hash_hex(str(info[item.path]["narHash"]))
        assert sorted(item.references) == sorted(info[item.path]["references"])  # type: ignore[arg-type]
    kernel = manifest["roles"]["node"]["kernel"]
    assert any(kernel.startswith(p.path + "/") for p in found)
    assert found[-1].end == len(data) - 8  # the end marker follows the last path


def test_nix32_and_hex_forms(store_tree: str) -> None:
    sri = str(_path_info(store_tree)[store_tree]["narHash"])
    base32 = subprocess.run(
        [*NIX, "hash", "to-base32", sri], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert nar_hash_hex(f"sha256:{base32}") == nar_hash_hex(sri)
    assert nar_hash_hex(f"sha256:{nar_hash_hex(sri)}") == nar_hash_hex(sri)
    with pytest.raises(ValueError, match="not a SHA-256"):
        nar_hash_hex("md5-AAAA")


def test_malformed_streams_are_refused(store_tree: str) -> None:
    data = _export(store_tree)
    with pytest.raises(NarError, match="ends early"):
        list(read_export(io.BytesIO(data[: len(data) // 2])))
    with pytest.raises(NarError, match="expected 'nix-archive-1'"):
        list(read_export(io.BytesIO(data[:16] + b"X" + data[17:])))
    with pytest.raises(NarError, match="expected 0 or 1"):
        list(read_export(io.BytesIO(struct.pack("<Q", 7))))
    with pytest.raises(NarError, match="after the end"):
        list(read_export(io.BytesIO(data + b"junk")))
    huge = struct.pack("<QQ", 1, 1 << 40)
    with pytest.raises(NarError, match="corrupt length"):
        list(read_export(io.BytesIO(huge)))
