"""The scenario registry of the reliability suite.

Every test in this folder carries ``@pytest.mark.scenario(id=..., injected=..., checked=...)``:
what it breaks and what it proves afterwards. The texts may hold ``{param}`` placeholders filled
from the test's parametrization (an id without placeholders gets the case's pytest id appended),
so one parametrized test yields one scenario per case (the crash matrix is one test, one scenario
per failpoint). Collection fails when a test lacks the marker or
two scenarios share an id, so the generated report (``scripts/reliability_report.py`` →
``docs/reliability.md``) always lists every test that ran, once.

Every test here also gets the ``reliability`` marker, so ``pytest -m reliability`` runs the suite.
"""

from collections.abc import Iterator
from typing import Any

import pytest

from fantasy_kg_tests.reliability.plugin import METRICS_PROPERTY, SCENARIO_PROPERTY

_REQUIRED = ("id", "injected", "checked")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "scenario(id, injected, checked, category=None): a reliability scenario for the report",
    )
    config.addinivalue_line("markers", "reliability: part of the reliability and security suite")


def _fill(template: str, params: dict[str, Any]) -> str:
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        return template


def scenario_of(item: pytest.Item) -> dict[str, Any] | None:
    """The item's scenario metadata with placeholders filled, or ``None`` without a marker."""
    marker = item.get_closest_marker("scenario")
    if marker is None:
        return None
    missing = [k for k in _REQUIRED if not marker.kwargs.get(k)]
    if missing:
        raise pytest.UsageError(f"{item.nodeid}: scenario marker lacks {', '.join(missing)}")
    callspec = getattr(item, "callspec", None)
    params = dict(callspec.params) if callspec else {}
    module = getattr(item, "module", None)
    category = marker.kwargs.get("category") or getattr(module, "SCENARIO_CATEGORY", "")
    scenario_id = _fill(str(marker.kwargs["id"]), params)
    if callspec is not None and scenario_id == str(marker.kwargs["id"]):
        scenario_id = f"{scenario_id}-{callspec.id}"  # one scenario per parametrized case
    return {
        "id": scenario_id,
        "injected": _fill(str(marker.kwargs["injected"]), params),
        "checked": _fill(str(marker.kwargs["checked"]), params),
        "category": str(category or (module.__name__.rsplit(".", 1)[-1] if module else "")),
        "slow": item.get_closest_marker("slow") is not None,
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = __file__.rsplit("/", 1)[0]
    seen: dict[str, str] = {}
    for item in items:
        if not str(item.path).startswith(here):
            continue
        item.add_marker(pytest.mark.reliability)
        scenario = scenario_of(item)
        if scenario is None:
            raise pytest.UsageError(
                f"{item.nodeid}: every reliability test needs @pytest.mark.scenario(...)"
            )
        if scenario["id"] in seen:
            raise pytest.UsageError(
                f"scenario id {scenario['id']!r} used by {seen[scenario['id']]} and {item.nodeid}"
            )
        seen[scenario["id"]] = item.nodeid
        item.user_properties.append((SCENARIO_PROPERTY, scenario))


@pytest.fixture
def scenario_metrics(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict whose contents (wall time, peak memory, counts) land in the report's row."""
    metrics: dict[str, Any] = {}
    request.node.user_properties.append((METRICS_PROPERTY, metrics))
    yield metrics
