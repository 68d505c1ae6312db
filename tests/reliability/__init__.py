"""Reliability tests: the real production server (``image/project/serve``) under load, crashes and bad input."""
