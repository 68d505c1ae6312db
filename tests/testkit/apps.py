"""User projects shared by the test suites: written into a directory as a user would lay them out."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

#: An app factory in a sub-package with its own tests and conftest.py (Flask's tutorial layout): absolute imports
#: of its own package, an app command, a documented route, a project pytest config that turns warnings into errors.
FACTORY = {
    "pyproject.toml": """
        [project]
        name = "shop"
        version = "1.0"
        [tool.pytest.ini_options]
        testpaths = ["tests"]
        filterwarnings = ["error"]
    """,
    "shop/__init__.py": """
        import click
        from flask import Flask

        def create_app(test_config=None):
            app = Flask(__name__)
            app.config.from_mapping(SHOP_NAME="corner shop")
            if test_config:
                app.config.update(test_config)
            from shop import views  # an absolute import of the project's own package
            app.register_blueprint(views.bp)

            @app.cli.command("count-items")
            @click.argument("n", type=int)
            def count_items(n):
                click.echo(f"{n} items in {app.name}")

            return app
    """,
    "shop/views.py": """
        from flask import Blueprint, current_app, url_for

        bp = Blueprint("shop", __name__)

        @bp.get("/items/<int:item_id>")
        def item(item_id):
            \"\"\"One item.
            ---
            parameters:
              - {name: item_id, in: path, type: integer, required: true}
            responses:
              200: {description: the item}
            \"\"\"
            return {"id": item_id, "url": url_for("shop.item", item_id=item_id),
                    "shop": current_app.config["SHOP_NAME"], "module": __name__}
    """,
    "tests/conftest.py": """
        import pytest
        from shop import create_app

        @pytest.fixture
        def app():
            return create_app({"TESTING": True, "SHOP_NAME": "from the project's conftest"})

        @pytest.fixture
        def client(app):
            return app.test_client()
    """,
    "tests/test_items.py": """
        def test_item_uses_the_projects_own_fixture(client):
            body = client.get("/items/3").get_json()
            assert body == {"id": 3, "url": "/items/3", "shop": "from the project's conftest",
                            "module": "shop.views"}

        def test_hello_is_selected_by_k():
            pass
    """,
}


def lay_out(project: Path, files: dict[str, str]) -> Path:
    """Make ``project`` hold exactly ``files`` (relative path -> text, dedented); return ``project``."""
    project.mkdir(parents=True, exist_ok=True)
    for child in project.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    for rel, text in files.items():
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return project
