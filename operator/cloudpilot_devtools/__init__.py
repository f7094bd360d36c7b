"""Emulators and a latency proxy for ``cloudpilot demo``, the tests and the benchmarks.

A package of its own, next to ``cloudpilot`` and never imported by it at run time: the
operator must not carry test machinery. It is shipped in the same distribution, but what it
imports (kmock, moto, jsonpatch) comes only with the ``demo`` extra; ``cloudpilot demo``
says so when they are missing.
"""
