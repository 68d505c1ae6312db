"""Tests of the /hello route. ``client`` is the stack's fixture: a Flask test client of the full app."""


def test_hello_says_hello(client):
    response = client.get("/hello")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "Hello from Appsody!"
