"""Backends: adapters from a concrete model family to the interface the methods use."""
