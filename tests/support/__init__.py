"""Helpers shared by the test suites (emulators, operator runners, polling)."""
