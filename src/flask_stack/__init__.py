"""flask-stack: the host CLI of the python-flask stack (init, run, debug, test, build, deploy, stop)."""

__version__ = "0.4.0"
