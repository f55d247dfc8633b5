"""Helpers for tests and benchmarks: tiny SD-architecture pipelines built from configs, no download."""
