"""``unsample bench scale``: the command end to end on a toy-width SD 1.5 (same block structure as the
published config), the published configs' parameter counts, and the per-block extrapolation on exact cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unsample.cli import app
from unsample_lab.bench.scale_models import FAMILIES, block_counts, denoiser_parameters, load_config, with_blocks
from unsample_lab.bench.scale_report import derived, extrapolate, plan


def test_extrapolation_is_fixed_plus_per_block_times_blocks() -> None:
    # 2 of 24 blocks built: 1 s fixed + 2 blocks of 0.5 s measured = 2 s; at 24 blocks 1 + 24 * 0.5 = 13 s
    assert extrapolate(2.0, {"num_layers": 1.0}, {"num_layers": 2}, {"num_layers": 24}) == pytest.approx(13.0)
    # two kinds (Flux): 0.25 s fixed, 1 joint block of 0.5 s (of 19), 1 single block of 0.25 s (of 38)
    seconds = extrapolate(1.0, {"a": 0.5, "b": 0.25}, {"a": 1, "b": 1}, {"a": 19, "b": 38})
    assert seconds == pytest.approx(0.25 + 19 * 0.5 + 38 * 0.25)
    assert extrapolate(3.0, {}, {}, {}) == 3.0  # a whole UNet: nothing to scale


def test_derived_figures_of_a_reduced_row() -> None:
    # a row built with 1 of 4 blocks: bare pass 1 s at batch 1 (0.5 s inside the block), 3 s at batch 2
    # (2 s inside); the edit took 10 s (4 s inside the block), 6 evaluations in 4 calls of batches 1,1,2,2
    rec = {"key": "k", "kind": "method", "method": "ddim", "dtype": "float32", "blocks_built": {"n": 1},
           "blocks_full": {"n": 4}, "bare": {"1": [1.0, {"n": 0.5}], "2": [3.0, {"n": 2.0}]},
           "wall_seconds": 10.0, "method_blocks": {"n": 4.0}, "nfe": 6, "batches": {"1": 2, "2": 2},
           "network_seconds": 8.0, "weights_bytes": {"transformer": 400, "vae": 100}, "denoiser_parameters_full": 250,
           "memory_base_bytes": 1000, "peak_bytes": 1600}
    out = derived(rec)
    assert out["bare_s_per_nfe"] == pytest.approx(1.0 + 3 * 0.5)  # 2.5 s at 4 blocks
    wall = 10.0 + 3 * 4.0  # 22 s
    bare_same_calls = 2 * 2.5 + 2 * (3.0 + 3 * 2.0)  # 23 s
    assert out["s_per_nfe"] == pytest.approx(wall / 6)
    assert out["ratio"] == pytest.approx(wall / bare_same_calls)
    assert out["weights_full_gb"] * 1024**3 == pytest.approx(100 + 250 * 4)
    assert out["peak_gb"] * 1024**3 == pytest.approx(1000 + (1100 - 500) + 600)


def test_published_configs_have_the_published_sizes() -> None:
    # parameter counts of the published denoisers (SD 1.5 UNet 859.5 M, SDXL 2.567 B, SD3-medium 2.028 B, Flux-dev 11.9 B)
    expected = {"sd15": 859_520_964, "sdxl": 2_567_463_684, "sd3": 2_028_328_000, "flux": 11_901_408_320}
    for family in FAMILIES:
        assert denoiser_parameters(load_config(family)) == expected[family]
    assert block_counts(load_config("flux")) == {"num_layers": 19, "num_single_layers": 38}
    assert block_counts(with_blocks(load_config("sd3"), 2)) == {"num_layers": 2}


def test_plan_takes_only_what_applies() -> None:
    rows = plan(["sd15", "flux"], ["ddim", "fireflow"], steps=4, resolution=None, blocks=None, device="cpu",
                dtype="float32")
    labels = [(r.family, r.label, r.blocks, r.resolution) for r in rows]
    assert ("sd15", "ddim", None, 256) in labels and ("sd15", "fireflow", None, 256) not in labels
    assert ("flux", "fireflow", 1, 256) in labels
    assert ("flux", "recipe p2p (edict)", 1, 256) not in labels  # no hookable cross-attention
    cuda = plan(["sd15", "sd3"], ["ddim"], steps=4, resolution=None, blocks=None, device="cuda", dtype="float16")
    assert {(r.family, r.resolution, r.blocks) for r in cuda} == {("sd15", 512, None), ("sd3", 1024, None)}


def test_bench_scale_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "scale"
    args = ["bench", "scale", "--families", "sd15", "--methods", "ddim", "--recipes", "", "--steps", "1",
            "--resolution", "64", "--tiny", "--inline", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    for column in ("s / NFE", "bare s / NFE", "ratio to bare, same calls", "peak GB", "weights GB"):
        assert column in res.output
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == ["bare forward", "ddim"]
    edit = rows[1]
    assert edit["nfe"] == edit["evaluated"] > 0  # the API's count is the network's batch items
    assert edit["wall_seconds"] > edit["network_seconds"] > 0
    assert (out / "table.md").is_file()
    again = CliRunner().invoke(app, args)  # resumable: nothing left to measure
    assert again.exit_code == 0 and "measuring" not in again.output
