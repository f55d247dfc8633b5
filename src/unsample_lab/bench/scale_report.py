"""``unsample bench scale``: which rows to run, running them (each in a fresh process, resumable), the
per-block extrapolation, and the tables.

Rows go to ``OUT/rows.jsonl`` as each finishes; a rerun with the same settings skips the rows already
there. ``OUT/results.json`` and ``OUT/table.md`` are rewritten from all the rows after every run.

Extrapolation (rows built with fewer transformer blocks than published): the time of a forward pass is
``fixed + sum over block kinds of per_block * blocks``. The run measures the seconds inside each kind
of block (forward hooks) and the rest is the fixed part (embedders, VAE, the method's own arithmetic),
so at the published counts ``seconds_full = seconds + sum_k block_seconds_k / built_k * (full_k - built_k)``.
Both the edit's time and the bare pass's are scaled so; the ratio is of the two scaled times. Memory:
the published denoiser's weights (its parameter count, counted on the meta device, times the dtype's
bytes) replace the built one's; the activations are the measured ones (the blocks run one after
another, so forward activations do not grow with the block count), except null-text, whose backward
keeps every block's activations: its activations are scaled by the block ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from unsample_lab.bench.scale import Row
from unsample_lab.bench.scale_models import FAMILIES, load_config

GB = 1024**3
FLOW_FAMILIES = ("sd3", "flux")
RECIPES = ("as-asked", "no-mask", "p2p")
"""The ladder's rungs measured (the first is the default edit)."""
CPU_RESOLUTION = 256
CUDA_RESOLUTION = {"sd15": 512, "sdxl": 1024, "sd3": 1024, "flux": 1024}
CPU_BLOCKS = 1


def extrapolate(seconds: float, block_seconds: dict[str, float], built: dict[str, int], full: dict[str, int]) -> float:
    """``seconds`` measured with ``built`` blocks of each kind, of which ``block_seconds`` were inside the
    blocks -> the seconds with ``full`` blocks (fixed part + per-block seconds x blocks)."""
    return seconds + sum(block_seconds[k] / built[k] * (full[k] - built[k]) for k in built if built[k])


def applies(method: str, family: str) -> bool:
    """Whether ``method`` runs on ``family``'s schedule (the registry's own refusal)."""
    from unsample.core.flow_schedule import FlowSchedule  # the library's core loads torch: on use
    from unsample.core.schedule import NoiseSchedule
    from unsample.methods.registry import get_method

    config = load_config(family)["scheduler"]
    schedule: Any = FlowSchedule.from_config(config) if family in FLOW_FAMILIES else NoiseSchedule.from_config(config)
    spec = get_method(method)
    return spec.refuses is None or spec.refuses(schedule) is None


def plan(families: Iterable[str], methods: Iterable[str], *, steps: int, resolution: int | None, blocks: int | None,
         device: str, dtype: str, tiny: bool = False, recipes: Iterable[str] = RECIPES) -> list[Row]:
    """Per family: the bare pass, each method that applies (the default edit inverted by it), the recipes."""
    from unsample.editing.ladder import get_rung  # the library: on use

    rows: list[Row] = []
    for family in families:
        if family not in FAMILIES:
            raise ValueError(f"family {family!r} is not one of {', '.join(FAMILIES)}")
        res = resolution or (CUDA_RESOLUTION[family] if device.startswith("cuda") else CPU_RESOLUTION)
        k = blocks if blocks is not None else (None if device.startswith("cuda") else CPU_BLOCKS)
        k = k if family in FLOW_FAMILIES else None
        bare = Row(family=family, kind="bare", steps=steps, resolution=res, blocks=k, device=device, dtype=dtype,
                   tiny=tiny)
        rows.append(bare)
        ran = [m for m in methods if applies(m, family)]
        rows += [replace(bare, kind="method", method=m) for m in ran if m != "null-text"]
        # prompt-to-prompt needs a UNet's cross-attention: the transformer families do not take it
        rows += [replace(bare, kind="recipe", method="edict", recipe=r)
                 for r in recipes if family not in FLOW_FAMILIES or not get_rung(r).needs_attention_control]
        rows += [replace(bare, kind="method", method="null-text")] if "null-text" in ran else []  # the slowest: last
    return rows


def read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """The finished rows of ``path`` (a JSONL file) by key."""
    done: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["key"]] = rec
    return done


def _run_isolated(row: Row) -> dict[str, Any]:
    """One row in a fresh interpreter (its peak memory is its own)."""
    proc = subprocess.run([sys.executable, "-m", "unsample_lab.bench.scale", json.dumps(asdict(row))],
                          capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("SCALE-ROW "):
            result: dict[str, Any] = json.loads(line[len("SCALE-ROW "):])
            return result
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"key": row.key, **asdict(row), "label": row.label, "error": f"exit {proc.returncode}: {tail}"}


def run(rows: list[Row], out: Path, *, isolate: bool = True, echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Measure the rows not yet in ``out/rows.jsonl``, appending each as it finishes; all rows' results."""
    from unsample_lab.bench.scale import run_row  # the library's API: on use

    out.mkdir(parents=True, exist_ok=True)
    path = out / "rows.jsonl"
    done = read_rows(path)
    for row in rows:
        if row.key in done and "error" not in done[row.key]:
            continue
        echo(f"measuring {row.family} {row.label} ...")
        result = _run_isolated(row) if isolate else run_row(row)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
        done[row.key] = result
        echo("  " + (result.get("error") or result.get("refused") or f"{derived(result)['s_per_nfe']:.3f} s/NFE"))
    results = [derived(done[r.key]) for r in rows if r.key in done]
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (out / "table.md").write_text(tables(results) + "\n", encoding="utf-8")
    return results


def derived(rec: dict[str, Any]) -> dict[str, Any]:
    """``rec`` with its figures at the published block counts: s/NFE, bare s/NFE, ratio, memory."""
    out = dict(rec)
    if "error" in rec or "refused" in rec or "bare" not in rec:
        return out
    built, full = rec["blocks_built"], rec["blocks_full"]
    extrapolated = built != full
    out["extrapolated"] = extrapolated

    def bare_full(batch: str) -> float:
        seconds, blocks = rec["bare"][batch]
        return extrapolate(seconds, blocks, built, full) if extrapolated else seconds

    out["bare_s_per_nfe"] = bare_full("1")
    out["bare_s_per_nfe_batch2"] = bare_full("2") / 2 if "2" in rec["bare"] else None
    bytes_per = {"float32": 4, "float16": 2, "bfloat16": 2}[rec["dtype"]]
    parts = rec["weights_bytes"]
    den = parts.get("unet", parts.get("transformer", 0))
    weights_built = sum(parts.values())
    weights_full = weights_built - den + rec["denoiser_parameters_full"] * bytes_per
    above = rec["peak_bytes"] - rec["memory_base_bytes"]
    if extrapolated and rec.get("method") == "null-text" and rec["kind"] == "method":
        above = above * max(full[k] / built[k] for k in built)
    out["weights_full_gb"] = weights_full / GB
    out["peak_above_model_gb"] = above / GB
    out["peak_gb"] = (rec["memory_base_bytes"] + weights_full - weights_built + above) / GB
    if rec["kind"] == "bare":
        out.update(s_per_nfe=out["bare_s_per_nfe"], ratio=1.0, nfe=1, calls=1)
        return out
    wall = extrapolate(rec["wall_seconds"], rec["method_blocks"], built, full) if extrapolated else rec["wall_seconds"]
    expected = sum(n * bare_full(b) for b, n in rec["batches"].items())
    out.update(wall_full_seconds=wall, s_per_nfe=wall / rec["nfe"], bare_same_calls_seconds=expected,
               ratio=wall / expected, network_share=rec["network_seconds"] / rec["wall_seconds"])
    out["network_ratio"] = rec["network_seconds"] / sum(n * rec["bare"][b][0] for b, n in rec["batches"].items())
    if "vae_seconds" in rec:  # the VAE runs outside the blocks: not scaled
        out["ratio_without_vae"] = (wall - rec["vae_seconds"]) / expected
        # what the method adds besides its network and the VAE, against its own network time (load cancels)
        out["outside_share"] = (rec["wall_seconds"] - rec["vae_seconds"] - rec["network_seconds"]) / rec["network_seconds"]
    return out


HEADER = ("| family | row | blocks | NFE (calls) | s / NFE | bare s / NFE (batch 1 / 2) | ratio to bare, same calls "
          "| ratio without the VAE | VAE s | rest / network | network share | peak GB | above model GB | weights GB |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def _blocks(rec: dict[str, Any]) -> str:
    if not rec.get("blocks_full"):
        return "whole"
    built = "+".join(str(v) for v in rec["blocks_built"].values())
    full = "+".join(str(v) for v in rec["blocks_full"].values())
    return f"{built} of {full}, extrapolated" if rec.get("extrapolated") else full


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _line(rec: dict[str, Any]) -> str:
    name = f"{rec['family']} | {rec['label']}"
    if "error" in rec or "refused" in rec:
        return f"| {name} | | | {rec.get('refused') or rec.get('error')} | | | | | | | | | |"
    share = f"{100 * rec['network_share']:.0f}%" if "network_share" in rec else "100%"
    nfe = f"{rec['nfe']} ({rec['calls']})"
    return (f"| {name} | {_blocks(rec)} | {nfe} | {rec['s_per_nfe']:.3f} | "
            f"{rec['bare_s_per_nfe']:.3f} / {_num(rec['bare_s_per_nfe_batch2'])} | {rec['ratio']:.2f}x | "
            f"{_times(rec.get('ratio_without_vae'))} | {_num(rec.get('vae_seconds'), 1)} | "
            f"{_pct(rec.get('outside_share'))} | {share} | "
            f"{rec['peak_gb']:.2f} | {rec['peak_above_model_gb']:.2f} | {rec['weights_full_gb']:.2f} |")


def tables(results: list[dict[str, Any]]) -> str:
    """The markdown tables: every row but null-text, then null-text apart (it runs backward passes too)."""
    main = [r for r in results if r.get("method") != "null-text" or r["kind"] != "method"]
    null = [r for r in results if r.get("method") == "null-text" and r["kind"] == "method"]
    text = HEADER + "\n" + "\n".join(_line(r) for r in main)
    if null:
        text += ("\n\nnull-text (its optimisation's backward passes are in the time, not in the NFE):\n\n"
                 + HEADER + "\n" + "\n".join(_line(r) for r in null))
    first = next((r for r in results if "steps" in r), None)
    if first is not None:
        text += (f"\n\n{first['steps']} steps, {first['device']} {first['dtype']}. A method row is invert + reconstruct "
                 "(VAE encode and decode included); a recipe row is the whole edit (VAE, inversion, mask, edit, check, "
                 "paste-back).")
    return text
