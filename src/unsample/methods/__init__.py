"""Inversion methods: one module per method, each an ``invert`` and its matching ``sample``.

The registry (`unsample.methods.registry`) finds every module here that defines ``METHOD``.
"""
