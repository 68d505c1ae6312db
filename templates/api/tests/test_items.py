"""CRUD on /items through the stack's test client (the whole app: validation, errors, database)."""

TEAPOT = {"name": "Teapot", "description": "Short and stout", "price_cents": 1250}


def test_create_read_update_delete(client):
    created = client.post("/items", json=TEAPOT)
    assert created.status_code == 201
    item = created.get_json()
    assert {k: item[k] for k in TEAPOT} == TEAPOT
    assert created.headers["Location"] == f"/items/{item['id']}"

    assert client.get(created.headers["Location"]).get_json() == item
    assert client.get("/items").get_json() == [item]

    replaced = client.put(f"/items/{item['id']}", json={**TEAPOT, "price_cents": 990})
    assert replaced.status_code == 200 and replaced.get_json()["price_cents"] == 990

    assert client.delete(f"/items/{item['id']}").status_code == 204
    assert client.get(f"/items/{item['id']}").status_code == 404
    assert client.get("/items").get_json() == []


def test_invalid_bodies_are_422_with_each_error(client):
    response = client.post("/items", json={"name": "", "price_cents": -1, "colour": "blue"})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    fields = {error["field"] for error in response.get_json()["errors"]}
    assert fields == {"name", "price_cents", "colour"}
    assert client.get("/items").get_json() == []  # nothing stored


def test_every_error_is_problem_details_whatever_accept_says(client):
    for headers in ({}, {"Accept": "text/html"}, {"Accept": "application/json"}):
        cases = [
            (client.get("/items/12345", headers=headers), 404),
            (client.patch("/items", headers=headers), 405),
            (client.post("/items", data="name=x", content_type="application/x-www-form-urlencoded", headers=headers),
             415),
            (client.post("/items", json={"name": ""}, headers=headers), 422),
            (client.post("/items", data="{not json", content_type="application/json", headers=headers), 400),
        ]
        for response, status in cases:
            assert response.status_code == status
            assert response.mimetype == "application/problem+json", (status, headers)
            body = response.get_json(force=True)
            assert body["status"] == status and body["title"] and body["detail"]
    assert "Allow" in client.patch("/items").headers


def test_readiness_checks_the_database(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.get_json()["checks"]["database"]["status"] == "UP"


def test_api_docs_are_openapi_3_with_the_models(client):
    spec = client.get("/apispec_1.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert {"/items", "/items/{item_id}"} <= set(spec["paths"])
    assert {"ItemIn", "ItemOut"} <= set(spec["components"]["schemas"])
    for schema in spec["components"]["schemas"].values():  # OpenAPI 3.0: one "example", no JSON Schema "examples"
        assert all("examples" not in field for field in schema["properties"].values())


def test_the_database_is_the_configs_database_url(app, tmp_path):
    import sys

    module = sys.modules[app.extensions["flask_stack"].module.__name__]  # this package, as the stack imported it
    assert app.config["DATABASE_URL"] is None  # settings.yaml's testing profile: none (conftest.py gives SQLite)
    assert module.database_url("postgres://u:p@db/shop", str(tmp_path)) == "postgresql+psycopg://u:p@db/shop"
    assert module.database_url(None, str(tmp_path)) == f"sqlite:///{tmp_path / 'items.sqlite3'}"
