"""parse_duration / format_duration: the duration syntax of every policy field."""

from __future__ import annotations

import pytest

from canaryd.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("1m30s", 90.0),
    ],
)
def test_parses(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad",
    [5, 5.0, "5", "5 minutes", "", "   ", "m", "5x", "-5m", "5m ago", True, False, None, [5]],
)
def test_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match=r"expected a duration such as '30s', '5m' or '2h'"):
        parse_duration(bad)  # type: ignore[arg-type]


def test_bare_number_is_refused_with_its_value() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(5)
    assert str(info.value) == "expected a duration such as '30s', '5m' or '2h', got 5"


@pytest.mark.parametrize(
    ("seconds", "text"), [(90, "1m30s"), (0.25, "250ms"), (0, "0s"), (86400 + 3600, "1d1h")]
)
def test_format_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)
