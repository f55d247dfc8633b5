"""The recipe ladder: its data, and an edit that stops at the first rung the check passes (counted calls)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import unsample
import unsample.api.editing as api_editing
from unsample.cli import app
from unsample.editing.check import CheckResult
from unsample.editing.ladder import EDIT_ONLY, LADDER, Rung, rung_names, rungs_for
from unsample.editing.spec import EditSpec


def test_every_rung_is_a_valid_change_of_the_edit_only() -> None:
    assert LADDER[0].changes == {} and len(set(rung_names())) == len(LADDER)
    for rung in LADDER:
        EditSpec(target_prompt="a cat").replace(**rung.changes)  # valid values of real settings
        assert set(rung.changes) <= EDIT_ONLY
    with pytest.raises(ValueError, match="only the edit's settings"):
        Rung("bad", {"steps": 10})


def test_the_rungs_an_edit_tries() -> None:
    every = rungs_for(None, True, True)
    assert [r.name for r in every] == list(rung_names())
    assert [r.name for r in rungs_for(None, False, True)] == ["as-asked"]
    assert [r.name for r in rungs_for("no-mask", True, True)] == ["no-mask"]
    without = rungs_for(None, True, False)  # a model without hookable cross-attention
    assert all(not r.needs_attention_control for r in without) and len(without) < len(every)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The check replaced by a script of verdicts; the editing loop's calls counted."""
    state: dict[str, Any] = {"verdicts": [], "edits": 0, "specs": []}
    real_edit = api_editing.edit_latent

    def judged(model: Any, spec: EditSpec, *args: Any) -> CheckResult:
        took, score = state["verdicts"].pop(0)
        state["specs"].append(spec)
        return CheckResult(edit_took=took, score=score, stderr=0.0, threshold=-0.5, direction=1.0, source_score=-1.0,
                           background_mse=None, evaluations=10)

    def counted(*args: Any, **kwargs: Any) -> Any:
        state["edits"] += 1
        return real_edit(*args, **kwargs)

    monkeypatch.setattr(api_editing, "_judged", judged)
    monkeypatch.setattr(api_editing, "edit_latent", counted)
    yield state


def test_the_ladder_stops_at_the_first_rung_that_passes(tiny_model, tiny_image, scripted) -> None:
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", steps=3)
    once = unsample.edit(tiny_model, inv, "a green cat", check=False, output="result")
    scripted["verdicts"] = [(False, -2.0), (True, 0.1), (True, 0.2)]
    res = unsample.edit(tiny_model, inv, "a green cat", output="result")
    assert scripted["edits"] == 1 + 2 and scripted["verdicts"] == [(True, 0.2)]  # the third rung never ran
    assert [a.rung for a in res.ladder.attempts] == ["as-asked", "no-mask"] and res.ladder.succeeded == "no-mask"
    assert res.spec.mask == "none" and res.mask is None  # the kept rung's settings
    first = res.ladder.attempts[0].evaluations
    assert first == once.network_evaluations + 10  # the first rung: the edit as asked, plus its check
    assert res.network_evaluations == res.ladder.spent == sum(a.evaluations for a in res.ladder.attempts)


def test_when_no_rung_takes_the_best_attempt_is_kept_and_named(tiny_model, tiny_image, scripted) -> None:
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", steps=3)
    n = len(rungs_for(None, True, tiny_model.supports_attention_control))
    scripted["verdicts"] = [(False, -3.0), (False, -0.9), (False, -2.0)][:n]
    res = unsample.edit(tiny_model, inv, "a green cat", output="result")
    assert scripted["edits"] == n and res.ladder.succeeded is None and res.ladder.kept == "no-mask"
    assert res.check.score == -0.9 and not res.check.edit_took


def test_the_budget_stops_the_ladder_and_says_what_it_left(tiny_model, tiny_image, scripted) -> None:
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", steps=3)
    scripted["verdicts"] = [(False, -3.0)] * 3
    res = unsample.edit(tiny_model, inv, "a green cat", budget=1, output="result")
    assert scripted["edits"] == 1 and res.ladder.untried == tuple(rung_names()[1:]) and res.ladder.budget == 1


def test_the_cli_pins_a_recipe_stops_without_escalating_and_names_what_was_tried(tiny_pipeline_dir, tiny_image,
                                                                               tmp_path, scripted) -> None:
    src = tmp_path / "in.png"
    tiny_image.save(src)
    base = ["edit", str(src), "--source-prompt", "a red cat", "--target-prompt", "a green cat", "--steps", "3",
            "--model", str(tiny_pipeline_dir), "--device", "cpu", "--quiet"]
    scripted["verdicts"] = [(False, -3.0), (False, -1.0), (False, -2.0)]
    r = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "all.png")])
    assert r.exit_code == 0, r.output
    side = json.loads((tmp_path / "all.json").read_text())
    assert side["ladder"]["succeeded"] is None and side["ladder"]["kept"] == "no-mask"
    assert "warning: the edit did not take with any recipe (tried as-asked -3.00, no-mask -1.00" in r.output
    assert side["ladder"]["budget"] == EditSpec().budget and side["ladder"]["spent"] > 0
    scripted["verdicts"] = [(False, -3.0)]
    r = CliRunner().invoke(app, [*base, "--no-escalate", "-o", str(tmp_path / "one.png")])
    assert r.exit_code == 0 and len(json.loads((tmp_path / "one.json").read_text())["ladder"]["attempts"]) == 1
    scripted["verdicts"] = [(True, 0.0)]
    r = CliRunner().invoke(app, [*base, "--recipe", "no-mask", "-o", str(tmp_path / "pin.png")])
    pinned = json.loads((tmp_path / "pin.json").read_text())
    assert r.exit_code == 0 and [a["rung"] for a in pinned["ladder"]["attempts"]] == ["no-mask"]
    assert scripted["specs"][-1].mask == "none"
    r = CliRunner().invoke(app, [*base, "--recipe", "nonsense", "-o", str(tmp_path / "bad.png")])
    assert r.exit_code == 2 and "is not a rung of the ladder" in r.output


def test_a_check_that_is_off_never_escalates(tiny_model, tiny_image, scripted) -> None:
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", steps=3)
    res = unsample.edit(tiny_model, inv, "a green cat", check=False, output="result")
    assert scripted["edits"] == 1 and res.check is None and [a.rung for a in res.ladder.attempts] == ["as-asked"]
    assert torch.isfinite(res.latent).all()


def test_a_later_rung_that_cannot_run_on_these_prompts_is_skipped_and_named(tiny_model, tiny_image, scripted) -> None:
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", steps=3)
    scripted["verdicts"] = [(False, -3.0), (False, -1.0)]
    processors = {k: type(v) for k, v in tiny_model.pipe.unet.attn_processors.items()}
    # a word-for-word replace needs prompts of one length: the p2p rung cannot run on these two
    res = unsample.edit(tiny_model, inv, "a small green cat", output="result")
    assert [a.rung for a in res.ladder.attempts] == ["as-asked", "no-mask"]
    assert scripted["edits"] == 3 and len(scripted["verdicts"]) == 0  # p2p entered the loop, was refused, not judged
    assert {k: type(v) for k, v in tiny_model.pipe.unet.attn_processors.items()} == processors  # nothing left installed
    assert len(res.ladder.skipped) == 1 and res.ladder.skipped[0].startswith("p2p (") and res.ladder.untried == ()


def test_a_batch_that_shares_the_network_skips_prompt_to_prompt_by_name(tiny_model, tiny_image, scripted) -> None:
    """A Lockstep view cannot hook cross-attention (one job's processors would see every job's
    rows): an escalating edit on it that no rung passes names the prompt-to-prompt rung as
    skipped and never runs it."""
    from unsample.backends.lockstep import Lockstep

    lockstep = Lockstep(tiny_model.model_fn)
    view = lockstep.view(tiny_model)
    assert tiny_model.supports_attention_control and not view.supports_attention_control
    scripted["verdicts"] = [(False, -3.0), (False, -2.0), (False, -1.0)]
    inv = unsample.invert(tiny_model, tiny_image, "a red cat", steps=2)
    (res,) = lockstep.run([lambda: unsample.edit(view, inv, "a green cat", output="result")])
    assert [a.rung for a in res.ladder.attempts] == ["as-asked", "no-mask"] and scripted["edits"] == 2
    assert len(res.ladder.skipped) == 1 and res.ladder.skipped[0].startswith("p2p (it hooks cross-attention")
