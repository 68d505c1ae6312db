"""The stack's checks on the user's app (fixtures ``stack_app`` and ``stack_client`` from
the ``server.testing`` plugin: names a project's own fixtures do not replace).

They verify what the stack promises: health UP, probes answer, /metrics parses and counts requests, the API spec
is valid JSON listing the user's documented routes, and the user's blueprints are registered.
"""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

_PARAM = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


def _user_rules(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("stack_", "flasgger", "static")):
            continue
        yield rule


def test_health_is_up(stack_client):
    response = stack_client.get("/health")
    body = response.get_json()
    down = {k: v for k, v in body["checks"].items() if v["status"] != "UP"}
    assert response.status_code == 200, f"/health is DOWN; failing checks: {down}"
    assert body["status"] == "UP"


@pytest.mark.parametrize("probe", ["/health/live", "/health/ready", "/health/started"])
def test_probe_is_up(stack_client, probe):
    response = stack_client.get(probe)
    assert response.status_code == 200, f"{probe} answered {response.status_code}: {response.get_json()}"


def test_metrics_parse_and_count(stack_client):
    stack_client.get("/health/live")
    response = stack_client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    assert "http_requests" in families, "http_requests_total missing from /metrics"
    samples = [s for s in families["http_requests"].samples if s.name == "http_requests_total"]
    assert any(s.labels.get("endpoint") == "/health/live" for s in samples)
    assert "http_request_duration_seconds" in families


def test_apispec_lists_user_routes(stack_app, stack_client):
    response = stack_client.get("/apispec_1.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert isinstance(spec, dict) and "paths" in spec, "/apispec_1.json is not an API spec"
    assert "/health" in spec["paths"]
    for rule in _user_rules(stack_app):
        view = stack_app.view_functions.get(rule.endpoint)
        doc = getattr(view, "__doc__", None) or ""
        if "\n---" not in doc and not doc.lstrip().startswith("---"):
            continue  # only documented routes appear in the spec
        path = _PARAM.sub(r"{\1}", rule.rule)
        assert path in spec["paths"], f"documented route {rule.rule} missing from /apispec_1.json"


def test_user_blueprints_registered(stack_app):
    state = stack_app.extensions["flask_stack"]
    module = state.module
    if module is None or not state.stack_made:
        pytest.skip("the app is the user's own: its blueprints are its business")
    expected = []
    if getattr(module, "blueprint", None) is not None:
        expected.append(module.blueprint)
    expected.extend(getattr(module, "blueprints", None) or [])
    for bp in expected:
        assert stack_app.blueprints.get(bp.name) is bp, f"blueprint {bp.name!r} is not registered"
