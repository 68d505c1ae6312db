"""The stack's checks on a user's app, run by ``flask-stack test``:
``pytest -p server.testing --pyargs server.checks`` (or the path of this directory)."""
