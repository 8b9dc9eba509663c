"""The clock callsync asks: real UTC time, or pinned by $CALLSYNC_NOW."""

from datetime import date, datetime, timezone

import pytest

from pipeline import clock
from pipeline.errors import ConfigError


def test_real_time_is_utc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(clock.NOW_ENV, raising=False)
    assert clock.now().tzinfo is not None
    assert abs((clock.now() - datetime.now(timezone.utc)).total_seconds()) < 60


def test_pinned_time(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(clock.NOW_ENV, "2027-01-15T23:30:00-02:00")
    assert clock.now() == datetime(2027, 1, 16, 1, 30, tzinfo=timezone.utc)
    assert clock.today() == date(2027, 1, 16)


@pytest.mark.parametrize("text", ["yesterday", "2027-01-15T09:00:00"])
def test_bad_pinned_time_is_a_config_error(monkeypatch: pytest.MonkeyPatch, text: str):
    monkeypatch.setenv(clock.NOW_ENV, text)
    with pytest.raises(ConfigError, match=clock.NOW_ENV):
        clock.now()
