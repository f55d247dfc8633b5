"""`Lockstep`: jobs' network calls merged round by round, each job getting exactly its own answer."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from unsample.backends.lockstep import Lockstep


@dataclass
class Cond:
    embeds: torch.Tensor

    def cat(self, other: Cond) -> Cond:
        return Cond(torch.cat([self.embeds, other.embeds]))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"embeds": self.embeds}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Cond:
        return cls(tensors["embeds"])


class Recorder:
    """A closed-form per-sample network, out = x * (1 + t) + mean(cond), that logs its batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        self.batches.append(x.shape[0])
        shape = (-1,) + (1,) * (x.dim() - 1)
        return x * (1 + t.view(shape)) + cond.embeds.mean(dim=(1, 2)).view(shape)


class View:
    def __init__(self, fn) -> None:  # noqa: ANN001
        self.model_fn = fn


def _chain(model: View, seed: int, calls: int, side: int = 4) -> torch.Tensor:
    """A job: ``calls`` dependent network calls (each input is the last output)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 2, side, side, generator=g, dtype=torch.float64)
    cond = Cond(torch.randn(1, 3, 5, generator=g, dtype=torch.float64))
    for i in range(calls):
        x = model.model_fn(x, torch.tensor(0.1 * i, dtype=torch.float64), cond) / 2
    return x


def test_every_job_gets_its_own_answer_and_rounds_merge_whatever_is_running() -> None:
    alone = [_chain(View(Recorder()), seed=k, calls=k + 1) for k in range(4)]
    net = Recorder()
    lockstep = Lockstep(net)
    view = lockstep.view(View(None))  # type: ignore[arg-type]
    got = lockstep.run([lambda k=k: _chain(view, seed=k, calls=k + 1) for k in range(4)])
    for a, b in zip(alone, got):
        assert torch.equal(a, b)  # the closed form is per sample: merging changes nothing, bit for bit
    # round r merges the r-th call of every job that makes one: 4, 3, 2, 1 samples
    assert net.batches == [4, 3, 2, 1] and lockstep.rounds == 4 and lockstep.network_calls == 4


def test_calls_of_other_shapes_run_in_their_own_group_of_the_round() -> None:
    net = Recorder()
    lockstep = Lockstep(net)
    view = lockstep.view(View(None))  # type: ignore[arg-type]
    sides = [4, 8, 4, 8, 4]
    got = lockstep.run([lambda k=k: _chain(view, seed=k, calls=2, side=sides[k]) for k in range(5)])
    for k, side in enumerate(sides):
        assert torch.equal(got[k], _chain(View(Recorder()), seed=k, calls=2, side=side))
    assert net.batches == [3, 2, 3, 2] and lockstep.rounds == 2 and lockstep.network_calls == 4


def test_a_failing_job_is_its_own_outcome_and_the_others_finish() -> None:
    lockstep = Lockstep(Recorder())
    view = lockstep.view(View(None))  # type: ignore[arg-type]

    def bad() -> torch.Tensor:
        _chain(view, seed=0, calls=1)
        raise ValueError("job 1 is bad")

    got = lockstep.run([lambda: _chain(view, 0, 3), bad, lambda: _chain(view, 2, 3)])
    assert isinstance(got[1], ValueError) and str(got[1]) == "job 1 is bad"
    assert torch.equal(got[0], _chain(View(Recorder()), 0, 3)) and torch.equal(got[2], _chain(View(Recorder()), 2, 3))


def test_a_network_error_reaches_every_job_of_its_group() -> None:
    def broken(x, t, cond):  # noqa: ANN001, ANN202
        raise RuntimeError("out of memory")

    lockstep = Lockstep(broken)
    view = lockstep.view(View(None))  # type: ignore[arg-type]
    got = lockstep.run([lambda k=k: _chain(view, k, 2) for k in range(3)])
    assert all(isinstance(g, RuntimeError) and "out of memory" in str(g) for g in got)


def test_grad_mode_is_each_jobs_own_across_switches() -> None:
    lockstep = Lockstep(Recorder())
    view = lockstep.view(View(None))  # type: ignore[arg-type]

    def job(enabled: bool) -> list[bool]:
        seen = []
        with torch.set_grad_enabled(enabled):
            for _ in range(3):
                _chain(view, 0, 1)
                seen.append(torch.is_grad_enabled())
        return seen

    with torch.no_grad():
        got = lockstep.run([lambda: job(True), lambda: job(False), lambda: job(True)])
        assert not torch.is_grad_enabled()
    assert got == [[True] * 3, [False] * 3, [True] * 3]


def test_a_view_used_outside_run_says_so() -> None:
    view = Lockstep(Recorder()).view(View(None))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="outside Lockstep.run"):
        _chain(view, 0, 1)


@pytest.mark.parametrize("max_rows, batches", [(1, [1] * 10), (3, [3, 1, 3, 2, 1]), (2, [2, 2, 2, 1, 2, 1]), (5, [4, 3, 2, 1])])
def test_merged_calls_are_split_at_max_rows_with_the_same_answers(max_rows: int, batches: list[int]) -> None:
    alone = [_chain(View(Recorder()), seed=k, calls=k + 1) for k in range(4)]
    net = Recorder()
    lockstep = Lockstep(net, max_rows=max_rows)
    view = lockstep.view(View(None))  # type: ignore[arg-type]
    got = lockstep.run([lambda k=k: _chain(view, seed=k, calls=k + 1) for k in range(4)])
    for a, b in zip(alone, got):
        assert torch.equal(a, b)
    # rounds of 4, 3, 2, 1 rows, each split at max_rows
    assert net.batches == batches and lockstep.rounds == 4 and lockstep.network_calls == len(batches)


def test_max_rows_must_be_a_positive_whole_number() -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_rows"):
            Lockstep(Recorder(), max_rows=bad)  # type: ignore[arg-type]


def test_chunks_pack_whole_calls_and_split_only_the_large_ones() -> None:
    from unsample.backends.lockstep import chunk_bounds

    assert chunk_bounds([4, 4, 4], None) == [(0, 12)]
    assert chunk_bounds([4, 4, 4], 8) == [(0, 8), (8, 12)]
    assert chunk_bounds([4, 4, 4], 6) == [(0, 4), (4, 8), (8, 12)]  # a 4-row call is never cut
    assert chunk_bounds([2, 40, 3], 16) == [(0, 2), (2, 18), (18, 34), (34, 42), (42, 45)]
