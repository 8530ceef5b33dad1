"""Helpers to run real SGLang servers in tests, benchmarks and the launcher."""
