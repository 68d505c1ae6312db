"""Tests of the flask-stack CLI (init, errors, packaging)."""
