"""A user package with 100 routes (/r/0 .. /r/99), so /metrics carries 100 endpoints' series."""

from flask import Blueprint

blueprint = Blueprint("routes100", __name__)


def _make_view(number: int):
    def view():
        return f"route {number}", 200, {"Content-Type": "text/plain; charset=utf-8"}

    view.__name__ = f"route_{number}"
    return view


for _number in range(100):
    blueprint.add_url_rule(f"/r/{_number}", f"route_{_number}", _make_view(_number))
