"""Helpers of the reliability tests beside ``testkit.serve`` (the production server, HTTP, wrk): the fixture
projects, /metrics samples."""

from __future__ import annotations

from pathlib import Path

from testkit.serve import REPO, get

TEMPLATE = REPO / "templates" / "simple"
FIXTURE_USERAPP = Path(__file__).resolve().parent / "userapp"


def scrape(port: int) -> list:
    """Scrape /metrics and return its samples (prometheus_client.parser Sample tuples)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = get(port, "/metrics", timeout=10)
    assert status == 200, f"/metrics answered {status}"
    return [s for family in text_string_to_metric_families(body.decode()) for s in family.samples]


def sample_value(samples, name: str, **labels) -> float:
    """Sum of the values of samples called ``name`` whose labels include ``labels``."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def series_keys(samples, ignore_labels=("pid",)) -> set:
    """The set of series identities (name + labels), leaving out series carrying any of ``ignore_labels``."""
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for s in samples
        if not any(label in s.labels for label in ignore_labels)
    }
