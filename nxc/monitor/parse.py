"""Prometheus text format → flat samples, with prometheus_client's parser.

The parser is the reference implementation's (no hand-written tokenizer): it handles
escaping in label values, ``NaN``/``+Inf``, optional timestamps and comments. What this
module adds is flattening families into rows and naming the problem in one line when a
node answers something that is not the format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from nxc.errors import NxcError

__all__ = ["MetricsFormatError", "ParsedSample", "labels_key", "parse_metrics"]


class MetricsFormatError(NxcError):
    """A node's answer is not in the Prometheus text format."""


@dataclass(frozen=True)
class ParsedSample:
    """One line of an exposition: ``metric{labels} value``; ``type`` is its family's."""

    metric: str
    labels: Mapping[str, str]
    value: float
    type: str


def labels_key(labels: Mapping[str, str]) -> str:
    """Canonical text of a label set (sorted JSON), used as the series key in the store."""
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"), ensure_ascii=False)


def parse_metrics(text: str, source: str = "metrics") -> list[ParsedSample]:
    """Every sample of ``text``; raise :class:`MetricsFormatError` naming ``source``.

    An empty answer is an error too: a sampler that printed nothing has failed.
    """
    if not text.strip():
        raise MetricsFormatError(f"{source}: empty answer (no metrics)")
    samples: list[ParsedSample] = []
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.append(
                    ParsedSample(sample.name, dict(sample.labels), float(sample.value), family.type)
                )
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise MetricsFormatError(
            f"{source}: not the Prometheus text format ({first}); answer begins: {text[:80]!r}"
        ) from None
    if not samples:
        raise MetricsFormatError(f"{source}: no samples in the answer: {text[:80]!r}")
    return samples
