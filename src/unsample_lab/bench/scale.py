"""``unsample bench scale``: one row of the scale bench, measured (normally in a process of its own).

A row is one family (the real architecture, `unsample_lab.bench.scale_models`) and one of: the bare
forward pass of its denoiser ("bare"); a method ("method": ``unsample.invert`` of a PIL image by that
method, then ``unsample.reconstruct`` of it, at the default inversion guidance 1; null-text at the edit
guidance 5, since without guidance it optimises nothing), so its time holds the VAE encode, the
inversion, the replay and the VAE decode; or an edit recipe of the ladder ("recipe": ``unsample.edit``
of the image, the default edit (EDICT) pinned to that rung, no escalation), whose time holds everything
a user's edit pays: the VAE encode, the inversion, the noise mask, the edit, the check, the VAE decode
and paste-back. Measured:

* seconds per network evaluation: the row's wall time / its network evaluations as the API reports
  them (``Inversion.nfe`` + the replay's or the edit's ``network_evaluations``);
* the bare pass: the model's denoiser callable (``Model.model_fn``) timed alone at every batch size the
  row called it with, before the row (batch 1, after one warm-up pass) and after it (every batch it
  used), so machine load falls on both alike;
  the ratio is the row's wall time over the bare time of the same calls (sum over its calls of the
  bare seconds at that call's batch): 1.00 means the row costs nothing beyond its network;
* the seconds of the VAE's encode and decode (``Model.encode_image``, ``Model.decode_latent``), so the
  ratio can be given without them too;
* peak memory: on CPU the process's peak resident set (VmHWM, reset after the model is built, so the
  build's transients do not count) above the resident set after the build; on CUDA
  ``torch.cuda.max_memory_allocated`` above the allocation after the build;
* with fewer transformer blocks than published, the seconds inside each kind of block (forward hooks),
  from which `scale_report.extrapolate` scales the time to the published block count.

    python -m unsample_lab.bench.scale '{"family": "sd15", "kind": "bare", ...}'   (prints one JSON line)
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np
import torch
from PIL import Image

from unsample.backends.base import Model
from unsample.defaults import EDIT_GUIDANCE, INVERSION_GUIDANCE
from unsample.errors import UnsampleError
from unsample_lab.bench.scale_models import (
    block_counts,
    build_model,
    denoiser_module,
    denoiser_parameters,
    load_config,
    tiny,
    weight_bytes,
    with_blocks,
)

SOURCE = "a photo of a red circle on a blue background"
TARGET = "a photo of a green square on a blue background"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Row:
    """What one row measures (its key in the results file is every field)."""

    family: str
    kind: str
    """"bare", "method" or "recipe"."""
    method: str = "edict"
    recipe: str = "as-asked"
    steps: int = 4
    resolution: int = 256
    blocks: int | None = None
    """Blocks of each kind built (None: as published)."""
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    tiny: bool = False
    """Toy widths (tests)."""

    @property
    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def label(self) -> str:
        if self.kind == "bare":
            return "bare forward"
        return self.method if self.kind == "method" else f"recipe {self.recipe} ({self.method})"


class _Sync:
    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def __call__(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


class NetworkTimer:
    """Stands in for ``model.model_fn`` (an instance attribute, so the Denoisers the API builds call it):
    the batch size and wall seconds of every call."""

    def __init__(self, model: Model, sync: Callable[[], None]) -> None:
        self.model = model
        self.sync = sync
        self.inner = model.model_fn
        self.calls: list[tuple[int, float]] = []

    def __enter__(self) -> Self:
        self.model.model_fn = self
        return self

    def __exit__(self, *exc: object) -> None:
        delattr(self.model, "model_fn")

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        self.sync()
        begin = time.perf_counter()
        out = self.inner(x, t, cond)
        self.sync()
        self.calls.append((int(x.shape[0]), time.perf_counter() - begin))
        return out


class VaeTimer:
    """Stands in for ``model.encode_image`` and ``model.decode_latent`` (instance attributes): their seconds."""

    def __init__(self, model: Model, sync: Callable[[], None]) -> None:
        self.model, self.sync, self.seconds = model, sync, 0.0
        self.inner = {name: getattr(model, name) for name in ("encode_image", "decode_latent")}

    def __enter__(self) -> Self:
        for name, fn in self.inner.items():
            setattr(self.model, name, self._timed(fn))
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.inner:
            delattr(self.model, name)

    def _timed(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        def timed(x: torch.Tensor) -> torch.Tensor:
            self.sync()
            begin = time.perf_counter()
            out = fn(x)
            self.sync()
            self.seconds += time.perf_counter() - begin
            return out
        return timed


class BlockTimer:
    """Seconds spent inside each kind of transformer block (forward hooks), accumulated until `take`."""

    def __init__(self, net: torch.nn.Module, kinds: dict[str, str], sync: Callable[[], None]) -> None:
        self.seconds: dict[str, float] = {kind: 0.0 for kind in kinds}
        self.sync = sync
        self._begin = 0.0
        for kind, attr in kinds.items():
            for block in getattr(net, attr):
                block.register_forward_pre_hook(self._start)
                block.register_forward_hook(self._stopper(kind))

    def _start(self, *_: object) -> None:
        self.sync()
        self._begin = time.perf_counter()

    def _stopper(self, kind: str) -> Callable[..., None]:
        def stop(*_: object) -> None:
            self.sync()
            self.seconds[kind] += time.perf_counter() - self._begin
        return stop

    def take(self) -> dict[str, float]:
        out = dict(self.seconds)
        self.seconds = {k: 0.0 for k in out}
        return out


class Memory:
    """Peak memory above a baseline taken after the model is built."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.base = 0

    def start(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            self.base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.base = _status_kb("VmRSS") * 1024
            _reset_peak_rss()

    def peak(self) -> int:
        """Peak bytes (process resident set on CPU, allocated tensors on CUDA) since `start`."""
        if self.cuda:
            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated())
        hwm = _status_kb("VmHWM")
        if hwm < 0:  # no /proc: the process's lifetime peak
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return hwm * 1024


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak resident set (VmHWM) to the current one."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass


def test_image(resolution: int) -> Image.Image:
    """A red disc on a blue background with a soft gradient, ``resolution`` px square."""
    yy, xx = np.mgrid[0:resolution, 0:resolution] / max(resolution - 1, 1)
    rgb = np.stack([0.1 + 0.2 * xx, 0.2 + 0.1 * yy, 0.8 - 0.2 * xx], axis=-1)
    disc = (xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.08
    rgb[disc] = (0.85, 0.15, 0.1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


class Bare:
    """The denoiser alone at a batch size, on a latent of the edit's shape at a mid-grid time label."""

    def __init__(self, model: Model, latent: torch.Tensor, steps: int, sync: Callable[[], None],
                 blocks: BlockTimer | None) -> None:
        self.model, self.latent, self.sync, self.blocks = model, latent, sync, blocks
        labels = model.schedule_for(tuple(latent.shape[-2:])).grid(steps).timesteps  # type: ignore[arg-type]
        self.label = float(labels[len(labels) // 2])
        self.cond = model.encode_prompt(SOURCE)
        self.runs: dict[int, list[tuple[float, dict[str, float]]]] = {}

    def _inputs(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        gen = torch.Generator().manual_seed(batch)
        x = torch.randn((batch, *self.latent.shape[1:]), generator=gen).to(self.latent.device)
        cond = self.cond
        for _ in range(batch - 1):
            cond = cond.cat(self.cond)
        return x, torch.full((batch,), self.label, dtype=torch.float64), cond

    @torch.no_grad()
    def time(self, batch: int, repeats: int = 2, record: bool = True) -> None:
        x, t, cond = self._inputs(batch)
        for _ in range(repeats):
            if self.blocks is not None:
                self.blocks.take()
            self.sync()
            begin = time.perf_counter()
            self.model.model_fn(x, t, cond)
            self.sync()
            seconds = time.perf_counter() - begin
            taken = self.blocks.take() if self.blocks is not None else {}
            if record:
                self.runs.setdefault(batch, []).append((seconds, taken))

    def mean(self, batch: int) -> tuple[float, dict[str, float]]:
        runs = self.runs[batch]
        kinds = runs[0][1].keys()
        return (sum(s for s, _ in runs) / len(runs), {k: sum(b[k] for _, b in runs) / len(runs) for k in kinds})


def run_row(row: Row) -> dict[str, Any]:
    """Measure one row in this process; the result is a flat JSON-able dict (`scale_report` reads it)."""
    import unsample  # the API (loads the methods): on use

    config = load_config(row.family)
    full_blocks = block_counts(config)
    built = with_blocks(config, row.blocks)
    if row.tiny:
        config, built = tiny(config), tiny(built)
    dtype = DTYPES[row.dtype]
    sync = _Sync(row.device)
    begin = time.perf_counter()
    model = build_model(built, device=row.device, dtype=dtype, seed=row.seed, name=f"random {row.family}",
                        resolution=row.resolution)
    build_seconds = time.perf_counter() - begin
    parts = weight_bytes(model)
    net = denoiser_module(model)
    built_blocks = block_counts(built)
    reduced = built_blocks != full_blocks
    blocks = BlockTimer(net, config.get("blocks", {}), sync) if reduced else None
    memory = Memory(row.device)
    memory.start()
    image = test_image(row.resolution)
    with torch.no_grad():
        latent = model.encode_image(model.image_to_tensor(image))  # also the VAE's warm-up
    bare = Bare(model, latent, row.steps, sync, blocks)
    bare.time(1, repeats=1, record=False)  # warm-up
    bare.time(1, repeats=1)
    result: dict[str, Any] = {
        "key": row.key, **asdict(row), "label": row.label, "build_seconds": build_seconds,
        "weights_bytes": parts, "denoiser_parameters": sum(p.numel() for p in net.parameters()),
        "denoiser_parameters_full": denoiser_parameters(config) if reduced else sum(p.numel() for p in net.parameters()),
        "blocks_built": built_blocks, "blocks_full": full_blocks, "memory_base_bytes": memory.base,
        "latent_shape": list(latent.shape), "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if row.kind == "bare":
        result["peak_bytes"] = memory.peak()
        for batch in (2, 2, 1):
            bare.time(batch, repeats=1)
        result["bare"] = {str(b): bare.mean(b) for b in (1, 2)}
        return result
    timer = NetworkTimer(model, sync)
    vae = VaeTimer(model, sync)
    if blocks is not None:
        blocks.take()
    with timer, vae:
        sync()
        begin = time.perf_counter()
        try:
            if row.kind == "method":
                guidance = EDIT_GUIDANCE if row.method == "null-text" else INVERSION_GUIDANCE
                inversion = unsample.invert(model, image, SOURCE, method=row.method, steps=row.steps,
                                            guidance=guidance, unknown_words="checked")
                replay = unsample.reconstruct(model, inversion, output="result")
                evaluations = replay.network_evaluations
            else:
                sample = unsample.edit(model, image, TARGET, source_prompt=SOURCE, method=row.method,
                                       steps=row.steps, recipe=row.recipe, escalate=False, output="result",
                                       unknown_words="checked")
                assert sample.inversion is not None
                inversion, evaluations = sample.inversion, sample.network_evaluations
                result.update(check=None if sample.check is None else bool(sample.check.edit_took),
                              mask_area=sample.mask_area)
        except UnsampleError as err:  # the method or recipe does not run on this family: say so
            return {**result, "refused": str(err)}
        sync()
        wall = time.perf_counter() - begin
    result["peak_bytes"] = memory.peak()
    result["method_blocks"] = blocks.take() if blocks is not None else {}
    batches = Counter(b for b, _ in timer.calls)
    for batch in sorted(set(batches) | {1}):
        bare.time(batch, repeats=1)
    result.update(
        wall_seconds=wall, inversion_nfe=inversion.nfe, later_evaluations=evaluations, nfe=inversion.nfe + evaluations,
        guidance=inversion.guidance, calls=len(timer.calls), batches={str(b): n for b, n in sorted(batches.items())},
        network_seconds=sum(s for _, s in timer.calls), vae_seconds=vae.seconds, evaluated=sum(b for b, _ in timer.calls),
        bare={str(b): bare.mean(b) for b in sorted(set(batches) | {1})},
    )
    return result


def main(argv: list[str] | None = None) -> None:
    """Measure the row given as JSON (the fields of `Row`) and print its result as one JSON line."""
    args = sys.argv[1:] if argv is None else argv
    row = Row(**json.loads(args[0]))
    result = run_row(row)
    print("SCALE-ROW " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
