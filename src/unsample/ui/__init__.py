"""The web UI, ``unsample ui``: invert an image once, edit it many times, download the results.

A thin layer over the public API (`unsample.load` / `invert` / `reconstruct` / `edit`,
`Inversion.save`), in small modules (gradio is imported only inside `app`'s functions, so
``import unsample`` stays light):

- `settings`: the limits and the queue's concurrency, as named constants.
- `controls`: a method's option controls, built from its config dataclass (`option_specs`).
- `session`: one browser session's state: its folder and its cache of inversions.
- `scenes`: the built-in scenes' provider, found through the ``unsample.scenes`` entry point.
- `callbacks`: the plain functions the page calls (testable without a browser); an edit is one `EditSpec`.
- `app`: the gr.Blocks layout, ``build_app(model)`` and ``serve(model, host, port)``.
"""
