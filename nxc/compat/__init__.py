"""Bridges to other tools' APIs, each behind an optional extra."""
