"""``unsample batch``: many jobs from a manifest, resumable, over several processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from unsample import defaults as edit_defaults
from unsample.batch import (
    done_file,
    launched_process,
    read_manifest,
    recorded,
    run_batch,
    shard_from_env,
)
from unsample.cli.common import (
    DeviceOpt,
    DtypeOpt,
    ModelConfigOpt,
    ModelOpt,
    OffloadOpt,
    QuietOpt,
    UserError,
    friendly,
    load_model,
)
from unsample.outputs import write_png


@friendly
def batch(
    manifest: Annotated[Path, typer.Argument(help="JSONL: one job per line (see 'unsample.batch').")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the outputs and manifest.done.jsonl (re-run to resume).")],
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed job.")] = False,
    processes: Annotated[int, typer.Option("--processes", min=1, help="Split the jobs over this many processes.")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Run up to this many compatible jobs through "
                                            "the network together.")] = edit_defaults.BATCH_SIZE,
    max_rows: Annotated[int, typer.Option("--max-rows", min=0, help="Most rows of one network call; larger (merged) "
                                          "calls are split, which bounds peak memory (0: no cap).")] = edit_defaults.MAX_ROWS,
    shard: Annotated[str | None, typer.Option("--shard", help="K/N: run shard K of N (default: RANK/WORLD_SIZE "
                                              "from torchrun or accelerate, else 0/1).")] = None,
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    offload: OffloadOpt = "none",
    dtype: DtypeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run invert / reconstruct / edit jobs from a manifest; a killed batch resumes where it stopped."""
    jobs = read_manifest(manifest)  # a bad manifest fails before the model loads
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; give a folder for the batch's outputs")
    if processes > 1:
        if shard is not None:
            raise UserError("--processes starts its own shards; give --processes or --shard, not both")

        out.mkdir(parents=True, exist_ok=True)
        begin = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))}
        common = [str(manifest), "--out", str(out), "--device", device, "--quiet", "--batch-size", str(batch_size),
                  "--max-rows", str(max_rows), "--offload", offload] + (["--model", model] if model else []) \
            + (["--model-config", model_config] if model_config else []) + (["--dtype", dtype] if dtype else []) + (["--fail-fast"] if fail_fast else [])
        procs = [subprocess.Popen([sys.executable, "-m", "unsample.cli", "batch", *common, "--shard", f"{k}/{processes}"], env=env)
                 for k in range(processes)]
        codes = [p.wait() for p in procs]
        records = recorded(out)
        ok = sum(r.get("status") == "ok" for r in records.values())
        failed = sum(r.get("status") == "failed" for r in records.values())
        typer.echo(f"{processes} processes: {ok} of {len(jobs)} jobs done, {failed} failed ({time.perf_counter() - begin:.1f} s)")
        if any(codes):
            raise UserError(f"a batch process ended with exit code {max(codes)}; re-run the same command to resume")
        return
    launched = None
    if shard is None:
        part = shard_from_env()
        if part[1] > 1:  # started by accelerate launch (or torchrun): accelerate places this process

            launched = launched_process(device)
            part, device = launched.shard, launched.device
    else:
        try:
            k_text, n_text = shard.split("/")
            part = (int(k_text), int(n_text))
            if part[1] < 1 or not 0 <= part[0] < part[1]:
                raise ValueError
        except ValueError:
            raise UserError(f"--shard {shard!r} is not K/N with 0 <= K < N (e.g. 0/2)") from None
    m = load_model(model, device, dtype, model_config, offload)

    res = run_batch(m, manifest, out, fail_fast=fail_fast, progress=not quiet, write_png=write_png, shard=part,
                    batch_size=batch_size, max_rows=max_rows or None)
    typer.echo(f"{res.done} done, {res.skipped} already done, {res.failed} failed ({res.seconds:.1f} s); "
               f"records in {out / done_file(part)}")
    for job_id, message in res.errors.items():
        typer.echo(f"  {job_id}: {message}", err=True)
    if launched is not None:
        launched.wait_for_everyone()
        if part[0] == 0:
            records = recorded(out)
            ok = sum(r.get("status") == "ok" for r in records.values())
            typer.echo(f"{part[1]} processes: {ok} of {len(jobs)} jobs done, {len(records) - ok} failed")
