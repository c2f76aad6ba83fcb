"""A missing shared fixture skips a plain ``pytest`` (saying why) and fails a CI run (``CI=true``)."""

from __future__ import annotations

import pytest

from conftest import in_ci, missing_fixture


@pytest.mark.parametrize("value", ["true", "1", "yes", "True"])
def test_missing_fixture_fails_in_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"shared fixture missing: x.*CI is set"):
        missing_fixture("x")


@pytest.mark.parametrize("value", [None, "", "false", "0", "no"])
def test_missing_fixture_skips_outside_ci(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception, match=r"shared fixture missing: x \(expected ../shared"):
        missing_fixture("x")
