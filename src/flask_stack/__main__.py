"""``python -m flask_stack``: the same as the ``flask-stack`` command."""

from .cli import main

main()
