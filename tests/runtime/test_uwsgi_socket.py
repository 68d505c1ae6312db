"""STACK_UWSGI_SOCKET: a uwsgi-protocol socket is never opened on a network interface unless asked for."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("value, expected", [
    ("", None), ("127.0.0.1:3031", "127.0.0.1:3031"), ("127.8.9.10:3031", "127.8.9.10:3031"),
    ("[::1]:3031", "[::1]:3031"), ("localhost:3031", "localhost:3031"), ("/run/app/uwsgi.sock", "/run/app/uwsgi.sock"),
])
def test_loopback_addresses_and_unix_sockets_are_accepted(value, expected):
    from serving.settings import load_serving_settings

    assert load_serving_settings({"STACK_UWSGI_SOCKET": value}, cpus=2).uwsgi_socket == expected


@pytest.mark.parametrize("value", ["0.0.0.0:3031", ":3031", "10.1.2.3:3031", "[::]:3031", "app.example:3031"])
def test_other_addresses_are_refused_unless_public_is_set(value):
    from server.exceptions import SettingsError
    from serving.settings import load_serving_settings

    with pytest.raises(SettingsError, match="is not a loopback address.*STACK_UWSGI_SOCKET_PUBLIC=1"):
        load_serving_settings({"STACK_UWSGI_SOCKET": value}, cpus=2)
    settings = load_serving_settings({"STACK_UWSGI_SOCKET": value, "STACK_UWSGI_SOCKET_PUBLIC": "1"}, cpus=2)
    assert settings.uwsgi_socket == value


@pytest.mark.parametrize("value", ["3031", "127.0.0.1", "127.0.0.1:port", "127.0.0.1:70000", "run/uwsgi.sock"])
def test_unusable_values_are_one_line_errors(value):
    from server.exceptions import SettingsError
    from serving.settings import load_serving_settings

    with pytest.raises(SettingsError, match="STACK_UWSGI_SOCKET=.* is neither HOST:PORT"):
        load_serving_settings({"STACK_UWSGI_SOCKET": value}, cpus=2)
