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
docs/batch.md gives the measured difference). Jobs whose method differentiates through the network,
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

    def __init__(self, model_fn: ModelFn) -> None:
        self._model_fn = model_fn
        self.rounds = 0
        """Rounds run so far."""
        self.network_calls = 0
        """Batched forward passes made (one per group of compatible calls in a round)."""

    def view(self, model: Model) -> Model:
        """``model`` whose ``model_fn`` goes through this Lockstep (valid inside `run` only).

        A shallow copy: the network, the autoencoder and the caches are the model's own.
        """
        proxy = copy.copy(model)
        proxy.model_fn = self._call  # type: ignore[method-assign]
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
        with torch.no_grad():
            out = self._model_fn(x, t, cond)
        self.network_calls += 1
        return list(out.split([c.x.shape[0] for c in calls]))
