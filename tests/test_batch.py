"""`unsample batch`: manifests checked line by line, failed jobs recorded, and a batch killed with
SIGKILL at random moments resumes to outputs identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from unsample.batch import DONE_FILE, read_manifest, recorded
from unsample.cli import app


def _manifest(folder: Path, n: int, steps: int) -> Path:
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(folder / "a.png")
    kinds = ("invert", "reconstruct", "edit")
    jobs = [{"id": f"job{i:02d}", "job": kinds[i % 3], "image": "a.png", "prompt": "a red cat",
             "target_prompt": "a green cat", "steps": steps, "method": "ddim" if i % 2 else "edict", "seed": i}
            for i in range(n)]
    path = folder / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(j) for j in jobs) + "\n")
    return path


@pytest.mark.parametrize("line, message", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "a job is a JSON object"),
    ('{"id": "a", "job": "paint", "image": "a.png"}', "'job' must be one of"),
    ('{"id": "../a", "job": "invert", "image": "a.png"}', "file-name-safe"),
    ('{"id": "a", "job": "edit", "image": "a.png", "prompt": "x"}', "needs 'target_prompt'"),
    ('{"id": "a", "job": "invert", "image": "a.png", "steps": "ten"}', "'steps' must be int"),
    ('{"id": "a", "job": "invert", "image": "a.png", "colour": 1}', "unknown key"),
    ('{"id": "a", "job": "invert", "image": 3}', "'image' must be"),
])
def test_bad_manifest_lines_are_one_line_errors(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message) as err:
        read_manifest(path)
    assert str(err.value).startswith(f"{path}:1:") and "\n" not in str(err.value)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "job": "invert", "image": "a.png"}\n' * 2)
    with pytest.raises(ValueError, match="used twice"):
        read_manifest(dup)


def test_failed_jobs_are_recorded_and_the_batch_goes_on(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, 3, 2)
    with open(manifest, "a") as f:
        f.write(json.dumps({"id": "missing", "job": "invert", "image": "nope.png", "prompt": "a cat"}) + "\n")
        f.write(json.dumps({"id": "zebra", "job": "invert", "image": "a.png", "prompt": "a zebra"}) + "\n")
    out = tmp_path / "out"
    args = ["batch", str(manifest), "--out", str(out), "--model", str(tiny_pipeline_dir), "--device", "cpu", "--quiet"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    records = {json.loads(line)["id"]: json.loads(line) for line in (out / DONE_FILE).read_text().splitlines()}
    assert records["missing"]["status"] == "failed" and "does not exist" in records["missing"]["error"]
    assert records["zebra"]["status"] == "failed" and "zebra" in records["zebra"]["error"]
    assert all(records[f"job{i:02d}"]["status"] == "ok" for i in range(3))
    again = CliRunner().invoke(app, args)
    assert "0 done, 5 already done" in again.output
    stop = CliRunner().invoke(app, args[:3] + [str(tmp_path / "out2")] + args[4:] + ["--fail-fast"])
    assert stop.exit_code == 2 and "job 'missing' failed" in stop.output


def _without_timings(value):
    if isinstance(value, dict):
        # timings, and the digest that covers them
        return {k: _without_timings(v) for k, v in value.items() if not k.endswith("seconds") and k != "sha256"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _contents(folder: Path) -> dict[str, object]:
    from safetensors import safe_open

    found: dict[str, object] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("manifest.done"):
            continue
        if p.suffix == ".png":
            found[p.name] = p.read_bytes()
        elif p.suffix == ".json":
            found[p.name] = _without_timings(json.loads(p.read_text()))
        elif p.suffix == ".safetensors":
            with safe_open(str(p), framework="pt") as f:
                meta = json.loads(f.metadata()["unsample"])
                found[p.name] = (_without_timings(meta), {k: f.get_tensor(k).numpy().tobytes() for k in f.keys()})
        else:
            found[p.name] = p.read_bytes()  # a stray file: the comparison below fails on it
    return found


@pytest.mark.subprocess
def test_sigkill_at_random_moments_resumes_to_identical_outputs(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, 12, 20)
    cmd = [sys.executable, "-m", "unsample.cli", "batch", str(manifest), "--model", str(tiny_pipeline_dir),
           "--device", "cpu", "--quiet", "--out"]
    subprocess.run(cmd + [str(tmp_path / "ref")], check=True, capture_output=True)
    rng = np.random.default_rng(7)
    out = tmp_path / "killed"

    def finished() -> int:
        return sum(r["status"] == "ok" for r in recorded(out).values()) if out.exists() else 0

    kills = 0
    while kills < 4 and finished() < 11:
        proc = subprocess.Popen(cmd + [str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # a random moment inside the batch: after 1-3 more jobs, then up to 0.3 s into the next one
        target = min(finished() + int(rng.integers(1, 4)), 11)
        while finished() < target and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.0, 0.3)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    subprocess.run(cmd + [str(out)], check=True, capture_output=True)
    assert kills >= 3, kills
    assert _contents(out) == _contents(tmp_path / "ref")
    records = recorded(out)
    assert sorted(records) == [f"job{i:02d}" for i in range(12)]
    assert all(r["status"] == "ok" for r in records.values())
    print(f"batch of 12 jobs: {kills} SIGKILLs, {kills + 1} resumes, {len(_contents(out))} files compared")


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
"""Every process of these runs on one thread (`--processes 2` and accelerate give each process one
of the two cores): torch's CPU kernels split their sums by thread count, so a 2-thread run may
differ from a 1-thread run in the last bits on some CPUs, and the tests compare bit for bit."""


@pytest.mark.subprocess
def test_two_processes_give_the_one_process_outputs(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, 6, 4)
    common = [str(manifest), "--model", str(tiny_pipeline_dir), "--device", "cpu", "--quiet", "--out"]
    one = subprocess.run([sys.executable, "-m", "unsample.cli", "batch", *common, str(tmp_path / "one")],
                         capture_output=True, text=True, env=ONE_THREAD)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "unsample.cli", "batch", *common, str(tmp_path / "two"), "--processes", "2"],
                         capture_output=True, text=True, env=ONE_THREAD)
    assert two.returncode == 0, two.stderr
    assert "2 processes: 6 of 6 jobs done" in two.stdout
    assert sorted(p.name for p in (tmp_path / "two").glob("manifest.done*")) == [
        "manifest.done.0-of-2.jsonl", "manifest.done.1-of-2.jsonl"]
    assert _contents(tmp_path / "two") == _contents(tmp_path / "one")
    # a resume with another process count skips what any shard finished (one process: run in this one)
    again = CliRunner().invoke(app, ["batch", *common, str(tmp_path / "two")])
    assert "0 done, 6 already done" in again.stdout


@pytest.mark.subprocess
def test_accelerate_launch_with_two_processes_gives_the_one_process_outputs(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, 6, 4)
    common = [str(manifest), "--model", str(tiny_pipeline_dir), "--quiet", "--out"]
    one = subprocess.run([sys.executable, "-m", "unsample.cli", "batch", *common, str(tmp_path / "one"), "--device", "cpu"],
                         capture_output=True, text=True, env=ONE_THREAD)
    assert one.returncode == 0, one.stderr
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "unsample.cli", "batch"]
    two = subprocess.run(launch + common + [str(tmp_path / "two")], capture_output=True, text=True, timeout=300, env=ONE_THREAD)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "2 processes: 6 of 6 jobs done, 0 failed" in two.stdout
    assert sorted(p.name for p in (tmp_path / "two").glob("manifest.done*")) == [
        "manifest.done.0-of-2.jsonl", "manifest.done.1-of-2.jsonl"]
    assert _contents(tmp_path / "two") == _contents(tmp_path / "one")


def test_shard_from_the_environment(monkeypatch) -> None:
    from unsample.batch import shard_from_env

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert shard_from_env() == (1, 2)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="do not name a shard"):
        shard_from_env()


def _run(manifest: Path, out: Path, model: Path, *extra: str) -> None:
    args = ["batch", str(manifest), "--out", str(out), "--model", str(model), "--device", "cpu", "--quiet", *extra]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output


def test_batched_jobs_match_their_one_at_a_time_runs(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    from PIL import Image as PILImage
    from safetensors.torch import load_file

    manifest = _manifest(tmp_path, 12, 3)
    _run(manifest, tmp_path / "one", tiny_pipeline_dir, "--batch-size", "1")
    _run(manifest, tmp_path / "four", tiny_pipeline_dir, "--batch-size", "4")
    records = recorded(tmp_path / "four")
    # 12 jobs of 6 kinds (job x method), 2 of each: every job shared the network with its twin
    assert {r["batch"] for r in records.values()} == {2}
    assert {r["batch"] for r in recorded(tmp_path / "one").values()} == {1}
    one, four = tmp_path / "one", tmp_path / "four"
    assert sorted(p.name for p in one.iterdir() if not p.name.startswith("manifest")) == \
        sorted(p.name for p in four.iterdir() if not p.name.startswith("manifest"))
    for p in one.glob("*.safetensors"):
        a, b = load_file(str(p)), load_file(str(four / p.name))
        assert float((a["trajectory"] - b["trajectory"]).abs().max()) < 1e-4
    for p in one.glob("*.png"):
        a = np.asarray(PILImage.open(p), dtype=np.int16)
        b = np.asarray(PILImage.open(four / p.name), dtype=np.int16)
        assert int(np.abs(a - b).max()) <= 1


def test_a_partly_done_group_reruns_with_its_companions(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, 12, 2)
    ref, out = tmp_path / "ref", tmp_path / "out"
    _run(manifest, ref, tiny_pipeline_dir, "--batch-size", "4")
    _run(manifest, out, tiny_pipeline_dir, "--batch-size", "4")
    # as if killed between the two records of a group: job05 and job11 (both ddim edits) ran together
    lines = (out / DONE_FILE).read_text().splitlines()
    (out / DONE_FILE).write_text("\n".join(ln for ln in lines if json.loads(ln)["id"] != "job11") + "\n")
    for name in ("job11.png", "job11.json", "job11.mask.png"):
        (out / name).unlink()
    companion = out / "job05.json"
    before = companion.stat().st_mtime_ns
    _run(manifest, out, tiny_pipeline_dir, "--batch-size", "4")
    assert recorded(out)["job11"]["batch"] == 2
    assert companion.stat().st_mtime_ns == before  # the companion ran again; its outputs were not rewritten
    assert _contents(out) == _contents(ref)


def test_max_rows_splits_every_call_and_keeps_the_outputs(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """Default edits with 4 noise-mask draws (calls of 2 prompts x 4 draws; the check's of 2 x 2 x 6)
    at batch size 2 with the cap at 5 and none: no network call is larger than the cap, the outputs agree. (No
    escalation: the ladder's prompt-to-prompt rung needs its 4 rows in one call, which a cap below 4
    refuses, and a batched job's rung meets its companion's calls; docs/memory.md.)"""
    import unsample
    from unsample.batch import run_batch
    from unsample.outputs import write_png

    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    jobs = [{"id": f"e{i}", "job": "edit", "image": "a.png", "prompt": "a red cat", "target_prompt": "a green cat",
             "steps": 3, "seed": i, "escalate": False, "mask_draws": 4} for i in range(2)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(j) for j in jobs) + "\n")
    outputs: dict[int | None, dict[str, np.ndarray]] = {}
    for cap in (None, 5):
        model = unsample.load(str(tiny_pipeline_dir), device="cpu")
        rows: list[int] = []
        network = model.model_fn

        def logged(x, t, cond, network=network, rows=rows):
            rows.append(x.shape[0])
            return network(x, t, cond)

        model.model_fn = logged  # type: ignore[method-assign]
        out = tmp_path / f"cap{cap}"
        res = run_batch(model, manifest, out, progress=False, write_png=write_png, batch_size=2, max_rows=cap)
        assert res.done == 2 and res.failed == 0
        assert max(rows) == (48 if cap is None else cap)  # uncapped: both jobs' check calls (2 x 24 rows) in one
        outputs[cap] = {p.name: np.asarray(Image.open(p), dtype=np.int16) for p in sorted(out.glob("*.png"))}
    assert sorted(outputs[None]) == sorted(outputs[5])
    for cap in (5,):
        for name, pixels in outputs[None].items():
            assert int(np.abs(pixels - outputs[cap][name]).max()) <= 1, (cap, name)
