"""The one hierarchy of errors a user can fix.

Everything here is something the user can act on: a bad argument, a model folder that cannot
load, a file that is not an inversion, a step that produced NaN or infinity. The edges (the CLI,
the web UI, the batch runner) show these as one line (exit code 2 in the CLI); any other exception
is a bug and keeps its traceback.

Every class is also a ``ValueError``, so code that caught ``ValueError`` before keeps working.
"""

from __future__ import annotations

__all__ = ["UnsampleError", "InputError", "ModelLoadError", "InversionFileError", "NonFiniteError", "SizeWarning"]


class UnsampleError(ValueError):
    """The base: a problem the user can fix, said in one line."""


class InputError(UnsampleError):
    """A bad argument or setting: a value out of its bounds, a prompt the model cannot read, an
    image that cannot be decoded, a manifest line that is not a job."""


class ModelLoadError(UnsampleError):
    """A model (hub id, folder, single file) that cannot be loaded as given."""


class InversionFileError(UnsampleError):
    """A file that is not an inversion this version reads: foreign, damaged, tampered or of
    another model."""


class NonFiniteError(UnsampleError):
    """A network output or a latent that is NaN or infinite.

    ``time_label`` is the model's time label of the call that produced it (None when unknown or
    already said in the message), so the caller can name the step.
    """

    def __init__(self, message: str, time_label: float | None = None) -> None:
        super().__init__(message)
        self.time_label = time_label


class SizeWarning(UserWarning):
    """An image edited at a working size far above the model's native area (``fit="native"`` on a
    large photo): the work goes on, the model may repeat objects (`unsample.images.size_warning`)."""
