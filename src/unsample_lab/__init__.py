"""The lab beside the library: the shapes world, the training and evaluation of the embedded
models, the benchmarks, the demos and the builders of tiny test pipelines.

It uses `unsample` as any user would; `unsample` never imports it (import-linter contracts in
pyproject.toml, checked by the test suite). Its commands (demo, train-embedded, evaluate-embedded,
bench) reach the ``unsample`` command line through the ``unsample.commands`` entry point.
"""
