from __future__ import annotations

import pytest

from nxc.netem import units


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("50ms", 50_000),
        ("1.5s", 1_500_000),
        ("250us", 250),
        ("0ms", 0),
        ("0.5ms", 500),
        ("1000s", 1_000_000_000),
    ],
)
def test_durations(text: str, micros: int) -> None:
    assert units.parse_duration(text) == micros


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("50", "'50' is not a duration (e.g. 50ms)"),
        (50, "50 is not a duration (e.g. 50ms)"),
        ("50 ms", "'50 ms' is not a duration (e.g. 50ms)"),
        ("-1ms", "'-1ms' is not a duration (e.g. 50ms)"),
        ("50msec", "'50msec' is not a duration (e.g. 50ms)"),
        ("1.5", "'1.5' is not a duration (e.g. 50ms)"),
        ("ms", "'ms' is not a duration (e.g. 50ms)"),
        ("0.5us", "'0.5us' is finer than the 1us resolution"),
        ("1001s", "'1001s' is longer than 1000s"),
        (None, "None is not a duration (e.g. 50ms)"),
    ],
)
def test_bad_durations(value: object, message: str) -> None:
    with pytest.raises(units.UnitError) as info:
        units.parse_duration(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("100mbit", 100_000_000),
        ("1gbit", 1_000_000_000),
        ("10kbit", 10_000),
        ("100Mbit", 100_000_000),
        ("1.5kbit", 1_500),
        ("8bit", 8),
        ("2tbit", 2_000_000_000_000),
    ],
)
def test_rates(text: str, bits: int) -> None:
    assert units.parse_rate(text) == bits


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("1xb", "'1xb' is not a rate (e.g. 100mbit)"),
        ("100", "'100' is not a rate"),
        ("100 mbit", "is not a rate"),
        ("-5mbit", "is not a rate"),
        ("100mbps", "ambiguous"),
        ("1.5bit", "not a whole number of bits per second"),
        ("4bit", "below the smallest rate"),
        (100, "100 is not a rate"),
    ],
)
def test_bad_rates(value: object, fragment: str) -> None:
    with pytest.raises(units.UnitError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        units.parse_rate(value)


def test_percentages() -> None:
    assert units.parse_percent("0.5%") == 0.5
    assert units.parse_percent("100%") == 100.0
    assert units.parse_percent("0%") == 0.0
    for bad in ("0.5", "50 %", "-1%", "101%", "%", 0.5, "1e2%"):
        with pytest.raises(units.UnitError):
            units.parse_percent(bad)


def test_round_trip_formatting() -> None:
    for text in ("50ms", "1.5s", "250us", "1.5ms", "0us"):
        assert units.format_duration(units.parse_duration(text)) == text
    for text in ("100mbit", "1gbit", "10kbit", "1.5kbit", "8bit", "2.5gbit"):
        assert units.format_rate(units.parse_rate(text)) == text
    assert units.format_percent(0.5) == "0.5%"
    assert units.format_percent(100.0) == "100%"
    assert units.format_percent(33.3333333) == "33.333333%"
