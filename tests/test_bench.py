"""`unsample bench`: reports are complete, strict and reproducible; costs are counted exactly.

Runs on the tiny random pipeline (figures mean nothing there; structure and counts do).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from unsample_lab.bench import edit as edit_bench
from unsample_lab.bench import reconstruction as rec_bench


def _without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


def test_reconstruction_report_rows_counts_and_files(tiny_model, tmp_path: Path) -> None:
    bench = rec_bench.ReconstructionBench(methods=("ddim", "edict"), steps=(2, 4), guidance=(1.0, 3.0), scenes=2, seed=3)
    result = rec_bench.run(tiny_model, bench, progress=False)
    rows = result["rows"]
    assert rows[0]["row"] == "autoencoder" and rows[0]["mse_over_floor"] == pytest.approx(1.0)
    assert len(rows) == 1 + 2 * 2 * 2
    by = {r["row"]: r for r in rows}
    # invert + reconstruct: steps model evaluations each, twice that under guidance (both CFG halves)
    assert by["ddim s=4 g=1"]["nfe"] == 8 and by["ddim s=4 g=3"]["nfe"] == 16
    assert by["edict s=2 g=3"]["nfe"] == 2 * by["ddim s=2 g=3"]["nfe"]
    for r in rows[1:]:
        assert r["noise_std"] > 0 and -1 <= r["noise_lag1"] <= 1 and r["images"] == 2

    rec_bench.write_report(result, bench, tmp_path, "unsample bench reconstruction (test)", tiny_model)
    for name in ("report.md", "results.json", "per_image.csv", "error_vs_steps.png", "error_vs_nfe.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    data = json.loads((tmp_path / "results.json").read_text())  # strict JSON: no NaN
    assert data["bench"]["steps"] == [2, 4] and data["versions"]["torch"] and data["model_fingerprint"]
    assert len((tmp_path / "per_image.csv").read_text().splitlines()) == 1 + 2 * len(rows)

    again = rec_bench.run(tiny_model, bench, progress=False)
    assert _without_timings(again["per_image"]) == _without_timings(result["per_image"])


def test_edit_bench_counts_both_branches_and_is_reproducible(tiny_model, tmp_path: Path) -> None:
    bench = edit_bench.EditBench(methods=("ddim",), controls=("swap", "p2p"), masks=("none", "noise", "attention"),
                                 pairs=2, kinds=("color",), steps=3, seed=1)
    result = edit_bench.run(tiny_model, bench, progress=False)
    rows = result["per_pair"]
    assert len(rows) == 2 * 2 * 3
    nfe = {(r["control"], r["mask"]): r["nfe"] for r in rows}
    # inversion and edit at guidance 5: 3 steps x 2 CFG halves each, x 2 branches for P2P edits and
    # attention masks; the noise mask adds 2 prompts x 10 draws x 2 CFG halves
    assert nfe == {("swap", "none"): 6 + 6, ("swap", "noise"): 6 + 6 + 40, ("swap", "attention"): 6 + 12,
                   ("p2p", "none"): 6 + 12, ("p2p", "noise"): 6 + 12 + 40, ("p2p", "attention"): 6 + 12}
    assert all(np.isfinite(r["floor_psnr"]) for r in rows)
    assert all(isinstance(r["success"], bool) and np.isfinite(r["target_psnr"]) for r in rows)
    again = edit_bench.run(tiny_model, bench, progress=False)
    assert _without_timings(again["per_pair"]) == _without_timings(rows)

    edit_bench.write_report(result, bench, tmp_path, "unsample bench edit (test)", tiny_model)
    for name in ("report.md", "results.json", "per_pair.csv", "gallery.png", "bg_psnr_vs_nfe.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert {(s["control"], s["mask"], s["kind"]) for s in summary} == {
        (c, m, k) for c in bench.controls for m in bench.masks for k in ("all", "color")}


def _real_folder(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(tmp_path / name)
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[5:12, 5:12] = 255
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    prompts = tmp_path / "edits.jsonl"
    prompts.write_text(
        json.dumps({"image": "a.png", "source_prompt": "a red circle", "target_prompt": "a blue circle", "mask": "a_mask.png"})
        + "\n\n" + json.dumps({"image": "b.png", "source_prompt": "a red square", "target_prompt": "a red star", "kind": "shape"}) + "\n"
    )
    return tmp_path, prompts


def test_edit_bench_on_a_folder_of_real_images(tiny_model, tmp_path: Path) -> None:
    folder, prompts = _real_folder(tmp_path)
    bench = edit_bench.EditBench(methods=("ddim",), controls=("swap", "p2p"), masks=("none", "attention"), steps=2,
                                 images_dir=str(folder), prompts_file=str(prompts))
    cases = edit_bench.load_cases(bench, tiny_model.resolution)
    assert [c.kind for c in cases] == ["real", "shape"]
    assert cases[0].mask.sum() > 0 and not cases[1].mask.any() and cases[0].blend_words == ("red", "blue")
    result = edit_bench.run(tiny_model, bench, progress=False)
    assert all(np.isnan(r["success"]) and np.isnan(r["target_psnr"]) for r in result["per_pair"])
    out = tmp_path / "report"
    edit_bench.write_report(result, bench, out, "test", tiny_model)
    assert "n/a" in (out / "report.md").read_text()
    assert json.loads((out / "results.json").read_text())["per_pair"][0]["success"] is None


def test_bad_prompts_file_is_a_one_line_cli_error(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    from unsample.cli import app

    folder, prompts = _real_folder(tmp_path)
    prompts.write_text('{"image": "a.png", "prompt": "only one prompt"}\n')
    res = CliRunner().invoke(app, ["bench", "edit", "--model", str(tiny_pipeline_dir), "--images", str(folder),
                                   "--prompts", str(prompts), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "edits.jsonl:1: expected" in res.output and not (tmp_path / "out").exists()
    res = CliRunner().invoke(app, ["bench", "reconstruction", "--model", str(tiny_pipeline_dir), "--images", str(folder)])
    assert res.exit_code == 2 and "go together" in res.output
    for bad, message in (("precision=float64", "METHOD:KEY=VALUE"), ("edict:precision=float64", "METHOD:KEY=VALUE"),
                         ("ddim:nope=1", "no option 'nope'")):
        res = CliRunner().invoke(app, ["bench", "reconstruction", "--model", str(tiny_pipeline_dir), "--methods", "ddim",
                                       "--option", bad, "--out", str(tmp_path / "rec")])
        assert res.exit_code == 2 and message in res.output, (bad, res.output)


def test_bench_option_reaches_the_method(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    from unsample.cli import app

    res = CliRunner().invoke(app, ["bench", "reconstruction", "--model", str(tiny_pipeline_dir), "--methods", "edict",
                                   "--steps", "2", "--guidance", "1", "--scenes", "1", "--option", "edict:precision=float64",
                                   "--out", str(tmp_path / "rec")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "rec" / "results.json").read_text())
    assert data["bench"]["options"] == {"edict": {"precision": "float64"}}


def test_merge_runs_of_different_methods(tiny_model, tmp_path: Path) -> None:
    from unsample_lab.bench.merge import merged_tables

    common = dict(controls=("swap",), pairs=2, kinds=("color",), steps=2)
    for method in ("ddim", "edict"):
        bench = edit_bench.EditBench(methods=(method,), **common)
        edit_bench.write_report(edit_bench.run(tiny_model, bench, progress=False), bench, tmp_path / method, "t", tiny_model)
    text = merged_tables([str(tmp_path / "ddim"), str(tmp_path / "edict")])
    assert text.startswith("2 edit pairs") and "| ddim | swap | none | 2 |" in text and "| edict | swap | none | 2 |" in text
    rec = rec_bench.ReconstructionBench(methods=("ddim",), steps=(2,), guidance=(1.0,), scenes=1)
    rec_bench.write_report(rec_bench.run(tiny_model, rec, progress=False), rec, tmp_path / "rec", "t", tiny_model)
    # two runs over the same scenes share their autoencoder rows: counted once
    assert merged_tables([str(tmp_path / "rec"), str(tmp_path / "rec")]).startswith("1 images")
    with pytest.raises(ValueError, match="one bench"):
        merged_tables([str(tmp_path / "ddim"), str(tmp_path / "rec")])


def test_edit_bench_robustness_set_runs_every_variant(tiny_model) -> None:
    bench = edit_bench.EditBench(methods=("ddim",), controls=("swap",), masks=("none", "exact"), pairs=1,
                                 kinds=("color",), steps=2, robustness=True, variants=("noise", "jpeg"))
    cases = edit_bench.load_cases(bench, tiny_model.resolution)
    assert [c.variant for c in cases] == ["noise", "jpeg"]
    clean = edit_bench.load_cases(edit_bench.EditBench(pairs=1, kinds=("color",)), tiny_model.resolution)[0]
    assert not np.array_equal(cases[0].source, clean.source) and cases[0].source_caption == clean.source_caption
    rows = edit_bench.run(tiny_model, bench, progress=False)["per_pair"]
    assert {(r["set"], r["mask"]) for r in rows} == {(v, m) for v in ("noise", "jpeg") for m in ("none", "exact")}
    summary = edit_bench.summarise(rows)
    assert "| noise | ddim | swap | exact |" in edit_bench.report_table(summary, "all", "noise")


def test_edit_bench_new_backgrounds_are_sets_of_their_own(tiny_model, tmp_path: Path) -> None:
    bench = edit_bench.EditBench(methods=("ddim",), controls=("swap",), masks=("exact",), pairs=1, kinds=("color",),
                                 steps=2, backgrounds=True, variants=("new-pattern", "photo"))
    result = edit_bench.run(tiny_model, bench, progress=False)
    # (the tiny pipeline draws 16 px scenes: objects 2-4 px wide, too small for either judge to read)
    assert [r["set"] for r in result["per_pair"]] == ["new-pattern", "photo"]
    edit_bench.write_report(result, bench, tmp_path / "bg", "t", tiny_model)
    report = (tmp_path / "bg" / "report.md").read_text()
    assert "## photo: all kinds" in report and "new backgrounds (object edits only)" in report


def test_report_folder_is_written_in_full_or_not_at_all(tmp_path: Path) -> None:
    from unsample_lab.bench.report import report_folder

    out = tmp_path / "rep"
    with report_folder(out) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with report_folder(out) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed while writing")
    assert (out / "a.txt").read_text() == "first"  # the earlier report stands
    with report_folder(out) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # no temp folders left


@pytest.mark.subprocess
def test_sigterm_while_writing_leaves_no_temp_folder(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from unsample.cli import install_signal_cleanup\n"
        "from unsample_lab.bench.report import report_folder\n"
        "install_signal_cleanup()\n"
        "with report_folder(Path(sys.argv[1])) as tmp:\n"
        "    (tmp / 'results.json').write_text('{}')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "rep")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    time.sleep(0.1)
    assert list(tmp_path.iterdir()) == []


def test_merge_keeps_the_first_pairs(tiny_model, tmp_path: Path) -> None:
    from unsample_lab.bench.merge import merged_tables

    bench = edit_bench.EditBench(methods=("ddim",), controls=("swap",), pairs=3, kinds=("color",), steps=2)
    edit_bench.write_report(edit_bench.run(tiny_model, bench, progress=False), bench, tmp_path / "three", "t", tiny_model)
    short = edit_bench.EditBench(methods=("ddim",), controls=("swap",), pairs=2, kinds=("color",), steps=2)
    edit_bench.write_report(edit_bench.run(tiny_model, short, progress=False), short, tmp_path / "two", "t", tiny_model)
    def no_times(text: str) -> list[str]:  # the last column is wall time
        return [line.rsplit("|", 2)[0] for line in text.splitlines()]

    assert no_times(merged_tables([str(tmp_path / "three")], pairs=2)) == no_times(merged_tables([str(tmp_path / "two")]))
    assert merged_tables([str(tmp_path / "three")]).startswith("3 edit pairs")


def test_side_by_side_pairs_the_rows_two_runs_share(tiny_model, tmp_path: Path) -> None:
    from unsample_lab.bench.side_by_side import side_by_side

    for name, methods in (("a", ("ddim", "edict")), ("b", ("ddim",))):
        rec = rec_bench.ReconstructionBench(methods=methods, steps=(2,), guidance=(1.0,), scenes=1)
        result = rec_bench.run(tiny_model, rec, progress=False)
        rec_bench.write_report(result, rec, tmp_path / name, "t", tiny_model)
    table = side_by_side(str(tmp_path / "a"), str(tmp_path / "b"))
    ddim = json.loads((tmp_path / "a" / "results.json").read_text())["rows"]
    ratio = next(r["mse_over_floor"] for r in ddim if r["row"] == "ddim s=2 g=1")
    lines = [line for line in table.splitlines() if line.startswith("| ddim")]
    assert len(lines) == 1 and "edict" not in table  # only the shared row
    assert lines[0].split(" | ")[4] == f"{ratio:.2f}" == lines[0].split(" | ")[5]  # same model: same figures
    other = rec_bench.ReconstructionBench(methods=("ddim",), steps=(2,), guidance=(1.0,), scenes=1, seed=5)
    rec_bench.write_report(rec_bench.run(tiny_model, other, progress=False), other, tmp_path / "c", "t", tiny_model)
    with pytest.raises(ValueError, match="different scenes"):
        side_by_side(str(tmp_path / "a"), str(tmp_path / "c"))
