"""A cap on the rows (batch entries) of one network call.

A call of B rows goes through the network as ceil(B / max_rows) calls of at most ``max_rows`` rows
each, in order, and the outputs are concatenated: the same rows, the same per-row conditioning, so
the result is the uncapped call's up to the last bits the network's kernels give for another batch
size (CPU convolutions are not batch-invariant; docs/memory.md gives the measured difference).
Peak activation memory grows with the rows of one call, so the cap bounds it: the noise mask's
call of 2 prompts x 20 draws, the edit check's 2 prompts x 2 latents x 6 draws, and
``unsample batch``'s merged calls (8 jobs' calls in one) are split by it.

A conditioning tensor whose first dimension is the call's rows is split with it; one of a single
row (broadcast to every row by the network) is passed whole to every chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from unsample.errors import InputError

ModelFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


def check_max_rows(max_rows: int | None) -> int | None:
    """``max_rows`` when it is None (no cap) or a whole number >= 1; a one-line `InputError` otherwise."""
    if max_rows is None:
        return None
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise InputError(f"max_rows={max_rows!r} must be a whole number >= 1 (rows of one network call), or None for no cap")
    return max_rows


def rows_of(cond: Any, start: int, stop: int, rows: int) -> Any:
    """Rows ``start:stop`` of a conditioning of ``rows`` rows (single-row tensors kept whole)."""
    tensors = {k: v[start:stop] if v.dim() and v.shape[0] == rows else v for k, v in cond.tensors().items()}
    return type(cond).from_tensors(tensors)


def call_in_chunks(model_fn: ModelFn, x: torch.Tensor, t: torch.Tensor, cond: Any, max_rows: int | None) -> torch.Tensor:
    """``model_fn(x, t, cond)``, made as calls of at most ``max_rows`` rows (None: one call)."""
    rows = x.shape[0]
    if max_rows is None or rows <= max_rows:
        return model_fn(x, t, cond)
    if t.dim() == 0:
        t = t.expand(rows)
    outs = [model_fn(x[s:s + max_rows], t[s:s + max_rows], rows_of(cond, s, s + max_rows, rows))
            for s in range(0, rows, max_rows)]
    return torch.cat(outs)


def capped(model_fn: ModelFn, max_rows: int | None) -> ModelFn:
    """``model_fn`` whose calls are split into chunks of at most ``max_rows`` rows (itself when None)."""
    if check_max_rows(max_rows) is None:
        return model_fn

    def capped_fn(x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        return call_in_chunks(model_fn, x, t, cond, max_rows)

    return capped_fn
