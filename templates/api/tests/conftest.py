"""Each test gets the whole stack app on its own fresh SQLite database."""

import pytest


@pytest.fixture
def app_config(tmp_path):
    """Config for the stack's ``app`` fixture: a new database file per test."""
    return {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'test.sqlite3'}"}
