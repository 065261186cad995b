"""Comparing a ``nix-store --export`` stream with a record's ``store-paths.json``."""

from __future__ import annotations

import zipfile
import zlib
from typing import IO, Any

from nxc.records.layout import CLOSURE
from nxc.records.nar import NarError, nar_hash_hex, read_export

__all__ = ["check_closure"]


def check_closure(stream: IO[bytes], store_paths: Any) -> tuple[list[str], int]:
    """Compare an export stream with ``store-paths.json``; (problems, paths read)."""
    listed: dict[str, dict[str, Any]] = {}
    if isinstance(store_paths, dict):
        listed = {str(p.get("path")): p for p in store_paths.get("paths", [])}
    problems: list[str] = []
    seen: set[str] = set()
    try:
        for exported in read_export(stream):
            seen.add(exported.path)
            info = listed.get(exported.path)
            if info is None:
                problems.append(f"{CLOSURE}: {exported.path} is not listed in store-paths.json")
                continue
            try:
                wanted = nar_hash_hex(str(info.get("narHash")))
            except ValueError as exc:
                problems.append(f"store-paths.json: {exported.path}: {exc}")
                continue
            if exported.nar_sha256 != wanted:
                problems.append(
                    f"{CLOSURE}: {exported.path}: NAR hash differs from store-paths.json "
                    f"({info.get('narHash')})"
                )
            elif exported.nar_size != info.get("narSize"):
                problems.append(
                    f"{CLOSURE}: {exported.path}: NAR size {exported.nar_size} differs from "
                    f"store-paths.json ({info.get('narSize')})"
                )
            if sorted(exported.references) != sorted(info.get("references") or []):
                problems.append(
                    f"{CLOSURE}: {exported.path}: references differ from store-paths.json"
                )
    except NarError as exc:
        problems.append(f"{CLOSURE}: malformed export: {exc}")
        return problems, len(seen)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        problems.append(f"{CLOSURE}: damaged ({exc})")
        return problems, len(seen)
    for path in sorted(set(listed) - seen):
        problems.append(f"{CLOSURE}: {path} is listed in store-paths.json but not in the closure")
    return problems, len(seen)
