"""Helpers shared by maitre's end-to-end tests (server subprocesses, raw HTTP, the Waitress sdist)."""
