"""Tooling run by make targets and by the tests: the docs generator and checker, and a process launcher."""
