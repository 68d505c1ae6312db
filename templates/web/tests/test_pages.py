"""The pages, the stylesheet, the form and its flash messages, through the stack's test client (a new app, so an
empty guestbook, per test)."""

def test_home_page_uses_the_layout_and_the_stylesheet(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.content_type
    html = page.get_data(as_text=True)
    assert "<h1>Guestbook</h1>" in html and "No messages yet" in html
    assert 'href="/static/style.css"' in html
    css = client.get("/static/style.css")
    assert css.status_code == 200 and "text/css" in css.content_type


def test_signing_redirects_and_flashes_once(client):
    posted = client.post("/messages", data={"name": "Ada", "text": "Hello <there>"})
    assert posted.status_code == 303 and posted.headers["Location"] == "/"
    html = client.get("/").get_data(as_text=True)
    assert "Thank you, Ada: your message is up." in html
    assert "<strong>Ada</strong>: Hello &lt;there&gt;" in html  # escaped by Jinja
    assert "Thank you" not in client.get("/").get_data(as_text=True)  # a flash is shown once


def test_a_bad_form_keeps_what_was_typed_and_says_why(client):
    response = client.post("/messages", data={"name": "", "text": "kept"})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Your name must be 1 to 40 characters." in html and ">kept</textarea>" in html
    assert "No messages yet" in client.get("/").get_data(as_text=True)


def test_about_page(client):
    assert "/apidocs/" in client.get("/about").get_data(as_text=True)


def test_the_testing_profile_of_settings_yaml_is_in_force(app, client):
    assert app.config["SECRET_KEY"] == "testing-only-not-a-secret"
    app.config["GUESTBOOK_SHOWN"] = 2
    for word in ("one", "two", "three"):
        client.post("/messages", data={"name": "Ada", "text": word})
    html = client.get("/").get_data(as_text=True)
    assert "<strong>Ada</strong>: three" in html and "<strong>Ada</strong>: two" in html
    assert "<strong>Ada</strong>: one" not in html  # only the newest GUESTBOOK_SHOWN
