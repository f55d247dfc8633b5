"""One pass through an edit: each piece of work once, and the one specification behind every surface.

The counting test wraps the unknown-word check (`prompt_problems`, wherever a module bound it),
the grid builder (`Inversion.grid_for`, the one function every grid comes from) and the model check
(`Inversion.check_model`) and runs `unsample edit IMAGE` with its defaults.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import unsample
import unsample.api  # every module that binds the word check is imported before the counters wrap it
from unsample.backends import vocabulary
from unsample.cli import app
from unsample.editing.spec import EditSpec, names, settings, spec_from_text
from unsample.inversion import Inversion

SOURCE, TARGET = "a red cat", "a green cat"


def _count_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {"words": Counter(), "grid": Counter(), "model": Counter()}
    original_words = vocabulary.prompt_problems

    def words(model: Any, prompt: str) -> Any:
        counts["words"][prompt] += 1
        return original_words(model, prompt)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("unsample") and getattr(module, "prompt_problems", None) is original_words:
            monkeypatch.setattr(module, "prompt_problems", words)
    original_grid = Inversion.grid_for

    def grid_for(*args: Any, **kwargs: Any) -> Any:
        counts["grid"]["calls"] += 1
        return original_grid(*args, **kwargs)

    monkeypatch.setattr(Inversion, "grid_for", staticmethod(grid_for))
    original_check = Inversion.check_model

    def check_model(self: Inversion, model: Any) -> None:
        counts["model"]["calls"] += 1
        original_check(self, model)

    monkeypatch.setattr(Inversion, "check_model", check_model)
    return counts


def test_a_default_edit_from_an_image_does_each_piece_of_work_once(
    tiny_pipeline_dir: Path, tiny_image: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in.png"
    tiny_image.save(src)
    counts = _count_calls(monkeypatch)
    out = tmp_path / "edit.png"
    r = CliRunner().invoke(app, ["edit", str(src), "--source-prompt", SOURCE, "--target-prompt", TARGET, "--steps", "3",
                                 "-o", str(out), "--model", str(tiny_pipeline_dir), "--device", "cpu", "--quiet"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert counts["words"] == Counter({SOURCE: 1, TARGET: 1})
    assert counts["grid"]["calls"] == 1
    assert counts["model"]["calls"] == 0  # the inversion was made in this pass with this model: nothing to check
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["mask"] == "noise" and (tmp_path / "edit.mask.png").is_file()


def test_a_default_edit_of_a_saved_inversion_checks_the_model_once(
    tiny_model: Any, tiny_image: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = unsample.invert(tiny_model, tiny_image, SOURCE, steps=3)
    counts = _count_calls(monkeypatch)
    res = unsample.edit(tiny_model, inv, TARGET, output="result")
    assert counts["model"]["calls"] == 1 and counts["grid"]["calls"] == 1
    assert counts["words"] == Counter({TARGET: 1})
    assert res.image is not None and res.mask is not None and res.mask_overlay is not None and res.inversion is inv


def test_the_api_takes_a_spec_or_keywords_and_gives_the_same_edit(tiny_model: Any, tiny_image: Any) -> None:
    inv = unsample.invert(tiny_model, tiny_image, SOURCE, steps=3)
    spec = EditSpec(target_prompt=TARGET, start_step=1, mask="none", guidance=2.0)
    by_spec = unsample.edit(tiny_model, inv, spec, output="latent")
    by_keywords = unsample.edit(tiny_model, inv, TARGET, start_step=1, mask="none", guidance=2.0, output="latent")
    changed = unsample.edit(tiny_model, inv, EditSpec(target_prompt="a blue cat"), target_prompt=TARGET, start_step=1,
                            mask="none", guidance=2.0, output="latent")
    assert torch.equal(by_spec, by_keywords) and torch.equal(by_spec, changed)
    with pytest.raises(ValueError, match="no setting"):
        unsample.edit(tiny_model, inv, spec, strength=3)


def test_an_image_is_edited_in_one_call_with_the_spec_inversion_settings(tiny_model: Any, tiny_image: Any) -> None:
    spec = EditSpec(target_prompt=TARGET, source_prompt=SOURCE, method="ddim", steps=3, inversion_guidance=1.0,
                    mask="none")
    res = unsample.edit(tiny_model, tiny_image, spec, output="result")
    direct = unsample.invert(tiny_model, tiny_image, SOURCE, method="ddim", steps=3)
    assert torch.equal(res.inversion.trajectory, direct.trajectory)
    assert torch.equal(res.latent, unsample.edit(tiny_model, direct, spec, output="latent"))


def _non_default_values() -> dict[str, Any]:
    """A value for every setting that differs from its default and passes its checks."""
    values = {
        "target_prompt": "a green dog", "source_prompt": "a red cat", "negative_prompt": "a photo", "guidance": 3.5,
        "start_step": 2, "control": "reweight", "blend_words": ("dog",), "reweight": {"green": 2.0},
        "cross_steps": 0.5, "self_steps": 0.25, "direct": True, "mask": "intersect", "mask_dilate": 2,
        "blend_start": 0.3, "mask_rule": "diffedit", "mask_smooth": 0, "mask_strength": 0.6, "mask_draws": 4,
        "mask_ratio": 2.5, "mask_threshold": 0.4, "check": False, "recipe": "no-mask", "escalate": False,
        "budget": 300, "paste_back": False, "paste_seam": 5, "fidelity": False, "fit": "native", "output_size": "working",
        "method": "ddim", "steps": 12, "inversion_guidance": 2.0, "options": {"precision": "float64"}, "seed": 7,
    }
    assert sorted(values) == sorted(names()), "a new setting needs a value here"
    return values


def test_every_setting_round_trips_through_json_and_differs_from_its_default() -> None:
    values = _non_default_values()
    spec = EditSpec(**values)
    defaults = EditSpec()
    for name in names():
        assert getattr(spec, name) != getattr(defaults, name), name
    text = json.dumps(spec.to_json())
    assert EditSpec.from_json(json.loads(text)) == spec
    with pytest.raises(ValueError, match="unknown edit setting"):
        EditSpec.from_json({**spec.to_json(), "strength": 1})


def test_every_setting_is_a_cli_option_that_reads_back_into_the_spec() -> None:
    """The edit command's options come from the spec: each field has its flag, and text parsed as
    the CLI parses it gives the spec back."""
    from typer.main import get_command

    command = get_command(app).commands["edit"]  # type: ignore[attr-defined]
    flags = {opt for param in command.params for opt in param.opts}
    for info in settings():
        assert info.flag in flags, info.name
    values = _non_default_values()
    text = dict(values)
    text["blend_words"] = ",".join(values["blend_words"])
    text["reweight"] = [f"{k}={v}" for k, v in values["reweight"].items()]
    text["options"] = [f"{k}={v}" for k, v in values["options"].items()]
    assert spec_from_text(text) == EditSpec(**values)


def test_a_manifest_edit_job_takes_every_setting_by_its_manifest_key(tmp_path: Path) -> None:
    from unsample.batch import edit_manifest_keys, read_manifest

    values = _non_default_values()
    line = {"id": "e", "job": "edit", "image": "a.png"}
    line |= {info.manifest_key: (list(values[info.name]) if isinstance(values[info.name], tuple) else values[info.name])
             for info in settings()}
    assert edit_manifest_keys()["guidance"] == "inversion_guidance" and edit_manifest_keys()["edit_guidance"] == "guidance"
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(line) + "\n")
    (job,) = read_manifest(path)
    assert job.edit == EditSpec(**values)
    assert (job.method, job.steps, job.guidance, job.seed) == ("ddim", 12, 2.0, 7)
