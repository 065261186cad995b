"""Names inside a published archive (shared by publish, verify and reproduce)."""

from __future__ import annotations

SUMS = "SHA256SUMS"
README = "README.md"
CITATION = "CITATION.cff"
CRATE = "ro-crate-metadata.json"
CLOSURE = "closure.nar"
GENERATED = (README, CITATION, CRATE, SUMS)
ARCHIVE_COMMENT = "nxc-archive 1 sha256sums={digest}"
