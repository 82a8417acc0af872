"""Helpers shipped for tests, the demo, benchmarks and adapter authors."""
