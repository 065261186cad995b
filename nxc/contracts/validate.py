"""Validate versioned JSON documents against the schemas shipped in the package."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from nxc.errors import ContractError
from nxc.fsutil import read_text
from nxc.paths import SCHEMA_DIR

# kind -> (version field, supported versions)
DOCUMENT_KINDS: dict[str, tuple[str, tuple[int, ...]]] = {
    "manifest": ("nxc_manifest", (1,)),
    "deployment": ("nxc_deployment", (1,)),
    "topology": ("nxc_topology", (1,)),
    # Run records (nxc/runs.py, nxc/records/).
    "run": ("nxc_run", (1,)),
    "inputs": ("nxc_inputs", (1,)),
    "store-paths": ("nxc_store_paths", (1,)),
    "report": ("nxc_report", (1,)),
}


@cache
def schema(kind: str, version: int) -> dict[str, Any]:
    path = SCHEMA_DIR / f"{kind}-{version}.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _field_path(error: ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def _best_error(errors: list[ValidationError]) -> ValidationError:
    best: ValidationError | None = jsonschema.exceptions.best_match(errors)
    assert best is not None
    return best


def validate_document(document: Any, kind: str, source: str) -> dict[str, Any]:
    """Check ``document`` against the schema for ``kind``; return it unchanged.

    ``source`` names where the document came from (a file path, "composition"…)
    and is the first word of every error message.
    """
    version_field, versions = DOCUMENT_KINDS[kind]
    if not isinstance(document, dict):
        raise ContractError(f"{source}: a {kind} must be a JSON object")
    version = document.get(version_field)
    if version is None:
        raise ContractError(f"{source}: not an nxc {kind}: field '{version_field}' is missing")
    if version not in versions:
        supported = ", ".join(str(v) for v in versions)
        raise ContractError(
            f"{source}: {version_field} {version!r} is not supported (this nxc reads {supported})"
        )
    validator = jsonschema.Draft202012Validator(schema(kind, version))
    errors = list(validator.iter_errors(document))
    if errors:
        error = _best_error(errors)
        raise ContractError(f"{source}: {_field_path(error)}: {error.message}")
    return document


def read_document_text(path: Path, kind: str) -> str:
    """The text of a contract file, or a one-line error naming the file."""
    return read_text(path, f"{kind} file", ContractError)


def load_document(path: Path, kind: str) -> dict[str, Any]:
    """Read and validate a JSON document, with errors naming the file and field."""
    text = read_document_text(path, kind)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    return validate_document(document, kind, str(path))
