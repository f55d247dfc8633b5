"""Several jobs' network calls merged into batched calls (``unsample batch --batch-size N``).

`Lockstep.run` runs each job as a greenlet (a coroutine on the calling thread) on its own view of
one `Model` (`Lockstep.view`). The view's ``model_fn`` hands the call to the scheduler and
suspends the job. When every job still running is suspended on a call, the calls go through the
network together: calls with the same per-sample shapes and dtypes are concatenated along the
batch (in job order), evaluated once, and split back; then each job resumes, in job order, until
its next call or its end. So round r holds the r-th call of every job that makes an r-th call:
which calls share a batch depends only on the jobs, and a run is reproducible bit for bit.

Greenlets rather than threads: everything runs on one thread, so one pool of CPU worker threads
serves every network call (with a thread per job, their idle OpenMP pools spin beside the busy
one and make a batched call 3x slower than it is alone on this machine), and no lock is needed.
Torch's grad mode is thread state; the scheduler keeps it per job across switches.

Nothing about a method changes: the method, the masks and the editing loop make the calls they
make alone, so each job computes what its one-at-a-time run computes, up to the last bits the
network's kernels give for another batch size (CPU convolutions are not batch-invariant;
docs/batch.md gives the measured difference). A merged call of more rows than ``max_rows`` goes
through the network in chunks of at most that many rows (`chunk_bounds`: whole calls packed while
they fit, a larger call split alone), which bounds the peak memory of a batch. Jobs whose method differentiates through the network,
or that install attention processors on the shared network, cannot share it this way;
`unsample.batch` runs those alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from greenlet import greenlet

from unsample.backends.base import Model
from unsample.core.rows import check_max_rows, rows_of

ModelFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
T = TypeVar("T")


@dataclass
class _Call:
    x: torch.Tensor
    t: torch.Tensor
    cond: Any


@dataclass
class _Finished:
    value: Any = None
    error: BaseException | None = None


class _Job(greenlet):
    """A job's greenlet, tagged with the Lockstep that schedules it."""

    lockstep: Lockstep


def _signature(call: _Call) -> tuple:
    """Calls with equal signatures can be concatenated along the batch."""
    cond = tuple((k, tuple(v.shape[1:]), v.dtype, v.device) for k, v in sorted(call.cond.tensors().items()))
    return (tuple(call.x.shape[1:]), call.x.dtype, call.x.device, call.t.dtype, type(call.cond), cond)


class Lockstep:
    """Runs jobs side by side, one batched network call per round of their calls."""

    def __init__(self, model_fn: ModelFn, max_rows: int | None = None) -> None:
        self._model_fn = model_fn
        self.max_rows = check_max_rows(max_rows)
        """Most rows of one network call (None: a merged call goes through whole)."""
        self.rounds = 0
        """Rounds run so far."""
        self.network_calls = 0
        """Batched forward passes made (one per group of compatible calls in a round)."""

    def view(self, model: Model) -> Model:
        """``model`` whose ``model_fn`` goes through this Lockstep (valid inside `run` only).

        A shallow copy: the network, the autoencoder and the caches are the model's own. Its own
        calls are not split (``max_rows`` None): the Lockstep splits the merged ones. It cannot hook
        cross-attention (``supports_attention_control`` False): a job that asks for prompt-to-prompt
        runs alone (`unsample.batch.runs_alone`), and the ladder's prompt-to-prompt rung is skipped
        with its reason in the record.
        """
        proxy = copy.copy(model)
        proxy.model_fn = self._call  # type: ignore[method-assign]
        proxy.max_rows = None
        # one job's attention processors would see every job's rows: no prompt-to-prompt in a shared call
        proxy.supports_attention_control = False  # type: ignore[misc]
        return proxy

    def _call(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        me = greenlet.getcurrent()
        if getattr(me, "lockstep", None) is not self:
            raise RuntimeError("a Lockstep view's model_fn was called outside Lockstep.run")
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        reply = me.parent.switch(_Call(x, t, cond))  # suspended until the round has run
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def run(self, jobs: Sequence[Callable[[], T]]) -> list[T | BaseException]:
        """Run ``jobs`` (callables that use `view` models) to their ends; each one's value or error."""
        outcome: list[T | BaseException] = [RuntimeError("did not run")] * len(jobs)
        grad = torch.is_grad_enabled()
        modes = [grad] * len(jobs)
        live: dict[int, _Job] = {}
        pending: dict[int, _Call] = {}

        def body(job: Callable[[], T]) -> _Finished:
            try:
                return _Finished(value=job())
            except Exception as err:  # handed to the caller, job by job (Ctrl-C and exits propagate)
                return _Finished(error=err)

        def resume(k: int, message: Any) -> None:
            # each job sees its own grad mode (thread state, shared by every greenlet)
            torch.set_grad_enabled(modes[k])
            got = live[k].switch(message)
            modes[k] = torch.is_grad_enabled()
            if isinstance(got, _Call):
                pending[k] = got
                return
            del live[k]
            outcome[k] = got.error if got.error is not None else got.value

        try:
            for k, job in enumerate(jobs):
                g = _Job(body)
                g.lockstep = self
                live[k] = g
            for k in sorted(live):
                resume(k, jobs[k])
            while live:
                # every live job is suspended on a call: run the round, then resume them in order
                replies = self._round(pending)
                pending.clear()
                for k in sorted(replies):
                    resume(k, replies[k])
        finally:
            torch.set_grad_enabled(grad)
        return outcome

    def _round(self, pending: dict[int, _Call]) -> dict[int, torch.Tensor | BaseException]:
        groups: dict[tuple, list[int]] = {}
        for k in sorted(pending):
            groups.setdefault(_signature(pending[k]), []).append(k)
        replies: dict[int, torch.Tensor | BaseException] = {}
        for keys in groups.values():
            calls = [pending[k] for k in keys]
            try:
                replies.update(zip(keys, self._evaluate(calls)))
            except Exception as err:  # every job of the group hears of it
                replies.update((k, err) for k in keys)
        self.rounds += 1
        return replies

    def _evaluate(self, calls: list[_Call]) -> list[torch.Tensor]:
        if len(calls) == 1:
            x, t, cond = calls[0].x, calls[0].t, calls[0].cond
        else:
            x = torch.cat([c.x for c in calls])
            t = torch.cat([c.t for c in calls])
            names = calls[0].cond.tensors().keys()
            cond = type(calls[0].cond).from_tensors({k: torch.cat([c.cond.tensors()[k] for c in calls]) for k in names})
        sizes = [c.x.shape[0] for c in calls]
        bounds = chunk_bounds(sizes, self.max_rows)
        with torch.no_grad():
            if len(bounds) == 1:
                out = self._model_fn(x, t, cond)
            else:
                rows = x.shape[0]
                out = torch.cat([self._model_fn(x[a:b], t[a:b], rows_of(cond, a, b, rows)) for a, b in bounds])
        self.network_calls += len(bounds)
        return list(out.split(sizes))


def chunk_bounds(sizes: list[int], max_rows: int | None) -> list[tuple[int, int]]:
    """Row ranges of the network calls that evaluate calls of ``sizes`` rows, concatenated in order,
    at most ``max_rows`` rows each (None: one range). Whole calls are packed together while they
    fit; a call larger than ``max_rows`` is split alone, so a call of at most ``max_rows`` rows (a
    prompt-to-prompt call of 4, whose processors need its rows together) is never split."""
    total = sum(sizes)
    if max_rows is None or total <= max_rows:
        return [(0, total)]
    bounds: list[tuple[int, int]] = []
    start = end = 0
    for size in sizes:
        if size > max_rows:
            if end > start:
                bounds.append((start, end))
            bounds.extend((a, min(a + max_rows, end + size)) for a in range(end, end + size, max_rows))
            start = end = end + size
        elif end + size - start > max_rows:
            bounds.append((start, end))
            start, end = end, end + size
        else:
            end += size
    if end > start:
        bounds.append((start, end))
    return bounds
