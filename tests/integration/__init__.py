"""End-to-end tests of flask-stack with the local engine (real processes, real HTTP)."""
