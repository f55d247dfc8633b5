"""Batch jobs from a manifest, resumable: ``unsample batch MANIFEST.jsonl --out DIR``.

A manifest has one JSON object per line, a job:
    {"id": "cat-1", "job": "edit", "image": "cat.png", "source_prompt": "...", "target_prompt": "...",
     "method": "edict", "steps": 36, "guidance": 1, "edit_guidance": 5, "mask": "noise", "options": {}, "seed": 0}

``job`` is "invert" (writes ``ID.safetensors``), "reconstruct" (``ID.png``) or "edit" (``ID.png``
and ``ID.mask.png``); every PNG gets its JSON sidecar. Image paths are relative to the manifest's
folder (a user mask file too). An edit job takes every setting of `unsample.EditSpec` by its manifest
key ("guidance" is the inversion's CFG, "edit_guidance" the edit's; the others by their names,
e.g. "control", "start_step", "mask_dilate"); missing keys take the spec's defaults. Invert and
reconstruct jobs take prompt, method, steps, guidance, options and seed (the API's defaults).

Resume: every output is written to a temp file and renamed, and only after all of a job's outputs
are in place is its line appended (and synced) to ``DIR/manifest.done.jsonl``. A batch killed at
any moment, SIGKILL included, therefore leaves finished jobs complete and unfinished ones without
any output file (at most a hidden temp file, removed by the next run); running the same command
again skips the jobs in the done file. A job that fails is recorded there with its one-line error
and the batch goes on (``fail_fast`` stops it).

Many processes: ``shard=(k, n)`` runs the jobs whose manifest index i has i % n == k and records
them in ``manifest.done.k-of-n.jsonl``; every done file in the folder counts when resuming, so a
batch can resume with another process count. `shard_from_env` reads the shard from the RANK and
WORLD_SIZE variables that ``torchrun`` (and ``accelerate launch`` where it starts several
processes) set; ``unsample batch --processes N`` starts N such processes itself. Each job's
outputs depend only on the job, so every process count gives the same files.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

import unsample
from unsample.api.quiet import PhaseProgress
from unsample.backends.lockstep import Lockstep
from unsample.core.bounds import Bounds, check_kind
from unsample.core.rows import check_max_rows
from unsample.defaults import MAX_ROWS
from unsample.editing.fidelity import FIDELITY_KEY, input_fidelity
from unsample.editing.masks import MASK_SOURCES
from unsample.editing.spec import GUIDANCE_BOUNDS, EditSpec, settings
from unsample.errors import InputError, UnsampleError
from unsample.images import canonical_fit, load_image, tensor_to_pil
from unsample.methods.registry import available_methods, get_method

DONE_FILE = "manifest.done.jsonl"
_JOB_ERRORS = (UnsampleError, OSError, UserWarning)
"""What a bad job raises: recorded as its failure. Anything else is a bug and stops the batch."""


def done_file(shard: tuple[int, int]) -> str:
    """The done file of one shard (the plain name for a single process)."""
    k, n = shard
    return DONE_FILE if n == 1 else f"manifest.done.{k}-of-{n}.jsonl"


def shard_from_env() -> tuple[int, int]:
    """(rank, world size) from RANK / WORLD_SIZE (torchrun, accelerate), else (0, 1)."""
    try:
        n = int(os.environ.get("WORLD_SIZE", "1"))
        k = int(os.environ.get("RANK", "0"))
    except ValueError:
        raise InputError("RANK and WORLD_SIZE must be whole numbers (as torchrun or accelerate set them)") from None
    if n < 1 or not 0 <= k < n:
        raise InputError(f"RANK={k} and WORLD_SIZE={n} do not name a shard; need 0 <= RANK < WORLD_SIZE")
    return k, n


@dataclass
class LaunchedProcess:
    """This process's place among those a launcher started, as accelerate's `PartialState` gives it."""

    shard: tuple[int, int]
    device: str
    state: Any

    def wait_for_everyone(self) -> None:
        self.state.wait_for_everyone()


def launched_process(device: str = "auto") -> LaunchedProcess:
    """The shard and device of this process under ``accelerate launch`` (or torchrun).

    Accelerate's `PartialState` sets up the process group (NCCL on GPUs, gloo on CPUs) and gives
    the process its index and its own device (GPU i for local process i). ``device`` other than
    "auto" keeps the user's choice.
    """
    from accelerate import PartialState  # heavy and needed only under a launcher

    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    placed = device if device != "auto" else "cpu" if state.device.type == "cpu" else str(state.device)
    return LaunchedProcess(shard=(state.process_index, state.num_processes), device=placed, state=state)


JOBS = ("invert", "reconstruct", "edit")
_COMMON_KEYS = {"id", "job", "image"}
_INVERSION_KEYS = {"prompt", "source_prompt", "target_prompt", "method", "steps", "guidance", "options", "seed", "fit"}
"""An invert or reconstruct job's keys beyond `_COMMON_KEYS` (a target prompt is allowed and unused, so
one manifest can list a file's jobs alike); an edit job's are every `EditSpec`
setting by its manifest key (`edit_manifest_keys`), and "prompt" for its source prompt."""


def edit_manifest_keys() -> dict[str, str]:
    """Manifest key -> `EditSpec` field, for an edit job (e.g. "guidance" is the inversion's CFG,
    "edit_guidance" the edit's, as in manifests written before the spec)."""
    return {info.manifest_key: info.name for info in settings()}


@dataclass(frozen=True)
class Job:
    """One line of a manifest, with its defaults filled in. ``method``, ``steps``, ``guidance``
    (the inversion's CFG), ``options`` and ``seed`` are the inversion's; an edit job's ``edit`` is
    every setting of the edit (its inversion settings are the fields above)."""

    id: str
    job: str
    image: str
    prompt: str
    method: str = "ddim"
    steps: int = 50
    guidance: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    fit: str = "area"
    """The sizing rule (`unsample.images`); an edit job's is its spec's."""
    edit: EditSpec | None = None

    def outputs(self) -> list[str]:
        if self.job == "invert":
            return [f"{self.id}.safetensors"]
        if self.job == "reconstruct":
            return [f"{self.id}.png", f"{self.id}.json"]
        return [f"{self.id}.png", f"{self.id}.json", f"{self.id}.mask.png"]

    def record(self) -> dict[str, Any]:
        """The job as the done file records it."""
        out = {k: v for k, v in asdict(self).items() if k != "edit"}
        return out | ({"edit": self.edit.to_json()} if self.edit is not None else {})


def _job_from(item: Any, where: str) -> Job:
    if not isinstance(item, dict):
        raise InputError(f"{where}: a job is a JSON object, got {type(item).__name__}")
    kind = item.get("job")
    if kind not in JOBS:
        raise InputError(f"{where}: 'job' must be one of {', '.join(JOBS)}, got {kind!r}")
    keys = _COMMON_KEYS | ({"prompt", *edit_manifest_keys()} if kind == "edit" else _INVERSION_KEYS)
    unknown = sorted(set(item) - keys)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; a {kind} job takes {', '.join(sorted(keys))}")
    job_id = item.get("id")
    if not isinstance(job_id, str) or not job_id or "/" in job_id or job_id.startswith(".") or job_id != job_id.strip():
        raise InputError(f"{where}: 'id' must be a file-name-safe string (no '/', not starting with '.'), got {job_id!r}")
    if not isinstance(item.get("image"), str):
        raise InputError(f"{where}: 'image' must be the path of an image (relative to the manifest), got {item.get('image')!r}")
    prompt = item.get("source_prompt", item.get("prompt", ""))
    if not isinstance(prompt, str):
        raise InputError(f"{where}: the prompt must be a string")
    if kind == "edit":
        return _edit_job(item, job_id, prompt, where)
    values: dict[str, Any] = {"method": item.get("method", "ddim"), "steps": item.get("steps", 50),
                              "guidance": item.get("guidance", 1.0), "options": item.get("options", {}),
                              "seed": item.get("seed", 0), "fit": item.get("fit", "area")}
    try:
        for name, kinds in (("method", (str,)), ("steps", (int,)), ("guidance", (int, float)), ("options", (dict,)),
                            ("seed", (int,)), ("fit", (str,))):
            check_kind(repr(name), values[name], kinds)
        Bounds(1, None, integer=True).check("'steps'", values["steps"])
        GUIDANCE_BOUNDS.check("'guidance'", values["guidance"])
        values["fit"] = canonical_fit(values["fit"])
    except InputError as err:
        raise InputError(f"{where}: {err}") from None
    return Job(id=job_id, job=kind, image=item["image"], prompt=prompt, **values)


def _edit_job(item: dict[str, Any], job_id: str, prompt: str, where: str) -> Job:
    """An edit job: its settings read into an `EditSpec` by their manifest keys."""
    target = item.get("target_prompt")
    if not isinstance(target, str) or not target.strip():
        raise InputError(f"{where}: an edit job needs 'target_prompt' (a non-empty string)")
    fields_by_key = edit_manifest_keys()
    settings_ = {fields_by_key[k]: v for k, v in item.items() if k in fields_by_key}
    spec = EditSpec.from_json(settings_ | {"source_prompt": prompt}, where)
    return Job(id=job_id, job="edit", image=item["image"], prompt=prompt, method=spec.method, steps=spec.steps,
               guidance=spec.inversion_guidance, options=dict(spec.options), seed=spec.seed, fit=spec.fit, edit=spec)


def read_manifest(path: str | Path) -> list[Job]:
    """The jobs of a manifest, checked line by line (a one-line error names the line and what is wrong)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {str(path)!r} does not exist; give a JSONL file with one job per line")
    jobs: list[Job] = []
    seen: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: not valid JSON ({err.msg})") from None
        job = _job_from(item, where)
        if job.id in seen:
            raise InputError(f"{where}: the id {job.id!r} is used twice; every job needs its own id")
        seen.add(job.id)
        jobs.append(job)
    if not jobs:
        raise InputError(f"manifest {str(path)!r} lists no jobs")
    return jobs


def recorded(out: Path) -> dict[str, dict[str, Any]]:
    """Every done file's records by job id (a torn last line, from a kill mid-write, is ignored)."""
    records: dict[str, dict[str, Any]] = {}
    for done in sorted(Path(out).glob("manifest.done*.jsonl")):
        for line in done.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                records[rec["id"]] = rec
    return records


def _append_record(out: Path, record: dict[str, Any], shard: tuple[int, int]) -> None:
    done = out / done_file(shard)
    text = json.dumps(record, sort_keys=True) + "\n"
    # a torn line from an earlier kill would glue onto ours: start on a fresh line
    if done.is_file() and done.stat().st_size and not done.read_bytes().endswith(b"\n"):
        text = "\n" + text
    with open(done, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _clean_temp_files(out: Path, jobs: list[Job]) -> None:
    """Hidden temp files that a killed run left for these jobs (other shards' files are theirs)."""
    prefixes = tuple(f".{name}." for job in jobs for name in job.outputs())
    for p in out.glob(".*"):
        if p.is_file() and p.name.startswith(prefixes):
            p.unlink(missing_ok=True)


def run_job(model: Any, job: Job, base: Path, out: Path, write_png: Callable[..., Any]) -> list[str]:
    """Run one job and write its outputs (each atomically); returns their file names. A word the
    model does not know fails the job (the API would only warn and drop it)."""
    picture = load_image(base / job.image)
    if job.edit is not None:
        return _run_edit(model, job, job.edit, picture, base, out, write_png)
    inv = unsample.invert(model, picture, job.prompt, method=job.method, steps=job.steps, guidance=job.guidance,
                          seed=job.seed, fit=job.fit, unknown_words="refuse", **job.options)  # type: ignore[arg-type]
    pixels = inv.input_pixels(model.device)  # the image as it was inverted: not read and sized again
    if job.job == "invert":
        inv.stats[FIDELITY_KEY] = input_fidelity(model, pixels, latent=inv.image_latent).to_json()
        inv.save(out / f"{job.id}.safetensors")
        return job.outputs()
    record = {"job": job.job, "id": job.id, "image": job.image, "inversion": inv.metadata()}
    sample = unsample.reconstruct(model, inv, output="result")
    # the reconstruction is made here anyway: its fidelity costs one more decode
    fidelity = input_fidelity(model, pixels, latent=inv.image_latent, reconstruction=sample.latent, method=inv.method)
    record |= {"nfe": sample.nfe, "model_calls": sample.model_calls, FIDELITY_KEY: fidelity.to_json()}
    write_png(sample.image, out / f"{job.id}.png", record)
    return job.outputs()


def _run_edit(model: Any, job: Job, spec: EditSpec, picture: Any, base: Path, out: Path,
              write_png: Callable[..., Any]) -> list[str]:
    """An edit job: invert and edit in one pass; a mask file is read relative to the manifest, like the image."""
    if isinstance(spec.mask, str) and spec.mask not in MASK_SOURCES:
        spec = spec.replace(mask=str(base / spec.mask))
    res = unsample.edit(model, picture, spec, output="result", unknown_words="refuse")
    record = {"job": job.job, "id": job.id, "image": job.image, "inversion": res.inversion.metadata(),
              "target_prompt": spec.target_prompt, "edit_guidance": spec.guidance, "mask": res.mask_source,
              "network_evaluations": res.network_evaluations, "model_calls": res.model_calls, "edit": spec.to_json(),
              "check": res.check.to_json() if res.check is not None else None,
              FIDELITY_KEY: res.input_fidelity.to_json() if res.input_fidelity is not None else None,
              "paste": res.paste.to_json() if res.paste is not None else None,
              "ladder": res.ladder.to_json() if res.ladder is not None else None, "sizes": res.sizes}
    # without a mask, the mask file shows the autoencoder's reconstruction of the source
    mask_image = res.mask_overlay if res.mask_overlay is not None else \
        tensor_to_pil(model.decode_latent(res.inversion.image_latent.float()))
    write_png(mask_image, out / f"{job.id}.mask.png", {"id": job.id, "mask": res.mask_source, "of": f"{job.id}.png"},
              sidecar=False)
    write_png(res.image, out / f"{job.id}.png", record)
    return job.outputs()


def runs_alone(job: Job) -> str | None:
    """Why ``job`` cannot share the network's batch with others (None: it can)."""
    if job.method not in available_methods():
        return "its method is unknown (the job fails on its own)"
    if get_method(job.method).differentiates:
        return f"{job.method} differentiates through the network"
    if job.edit is not None and (job.edit.mask_source() in ("attention", "intersect") or job.edit.control != "none"
                                 or job.edit.reweight):
        return "prompt-to-prompt control and attention masks install processors on the shared network"
    return None


def chunks(jobs: list[Job], batch_size: int) -> list[list[int]]:
    """The manifest's jobs (by index) in the groups that run through the network together.

    Jobs that share their kind and every setting but their prompts and seed are
    taken in manifest order, ``batch_size`` at a time; a job that `runs_alone` is a group of one.
    The groups depend only on the manifest and ``batch_size`` (not on shards or on what is done),
    so every process count and every resume batches each job with the same companions.
    """
    if batch_size < 1:
        raise InputError(f"batch size {batch_size} must be >= 1")
    groups: dict[Any, list[int]] = {}
    for i, job in enumerate(jobs):
        key: Any = ("alone", i) if runs_alone(job) else (
            job.job, job.method, job.steps, job.guidance, json.dumps(job.options, sort_keys=True),
            json.dumps(job.edit.to_json() | {"target_prompt": None, "source_prompt": None, "seed": None}, sort_keys=True)
            if job.edit is not None else None)
        groups.setdefault(key, []).append(i)
    return [members[s:s + batch_size] for members in groups.values() for s in range(0, len(members), batch_size)]


def _unhooked(model: Any) -> Any:
    """``model`` as a batch's shared network offers it: no cross-attention hooks (like a `Lockstep`
    view), so a job that shares nothing still escalates through the same ladder as one that does, and
    every batch size gives the same outputs (a job that asks for prompt-to-prompt runs alone, hooked)."""
    view = copy.copy(model)
    view.supports_attention_control = False
    return view


def _run_together(model: Any, jobs: list[Job], base: Path, outs: list[Path],
                  write_png: Callable[..., Any], max_rows: int | None = None) -> list[list[str] | BaseException]:
    """Run ``jobs`` side by side, their network calls merged by a `Lockstep` (merged calls split
    at ``max_rows`` rows); each job's names or error."""
    lockstep = Lockstep(model.model_fn, max_rows=max_rows)
    view = lockstep.view(model)
    return lockstep.run([partial(run_job, view, job, base, dest, write_png) for job, dest in zip(jobs, outs)])


@dataclass
class BatchResult:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)


def _message(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def run_batch(
    model: Any, manifest: str | Path, out: str | Path, *, fail_fast: bool = False, progress: bool = True,
    write_png: Callable[..., Any], shard: tuple[int, int] = (0, 1), batch_size: int = 1,
    max_rows: int | None = MAX_ROWS,
) -> BatchResult:
    """Run every job of ``manifest`` (of this shard) not yet recorded in ``out``'s done files.

    ``batch_size`` > 1 runs up to that many compatible jobs at once, their network calls merged
    (see `chunks` and `unsample.backends.lockstep`). A shard takes whole groups (group c goes to
    shard c % n). When a resume finds a group partly done, the done jobs run again beside the
    others, their outputs discarded, so every job keeps the companions it had in an uninterrupted run.

    ``max_rows`` caps the rows of one network call, merged or not (`unsample.core.rows`; None: no
    cap): a larger call is split into chunks, which bounds the batch's peak memory (docs/memory.md).
    """
    check_max_rows(max_rows)
    if max_rows is not None:  # a job run alone splits its own large calls (the noise mask's, the check's)
        model = copy.copy(model)
        model.max_rows = max_rows
    manifest = Path(manifest)
    k, n = shard
    every = read_manifest(manifest)
    groups = [g for c, g in enumerate(chunks(every, batch_size)) if c % n == k]
    jobs = [every[i] for g in groups for i in g]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; give a folder for the batch's outputs")
    out.mkdir(parents=True, exist_ok=True)
    _clean_temp_files(out, jobs)
    done = recorded(out)
    result = BatchResult(skipped=sum(j.id in done for j in jobs))
    begin = time.perf_counter()
    bar, finished = None, False
    if progress:
        bar = PhaseProgress(len(jobs), "batch", unit="job", initial=result.skipped, leave=True)
    try:
        for group in groups:
            members = [every[i] for i in group]
            if all(j.id in done for j in members):
                continue
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="unsample-companions-") as discard:
                outs = [Path(discard) if j.id in done else out for j in members]
                if len(members) == 1:
                    try:
                        alone = model if runs_alone(members[0]) else _unhooked(model)
                        outcomes: list[list[str] | BaseException] = [run_job(alone, members[0], manifest.parent, out, write_png)]
                    except _JOB_ERRORS as err:
                        outcomes = [err]
                else:
                    outcomes = _run_together(model, members, manifest.parent, outs, write_png, max_rows)
            seconds = round((time.perf_counter() - t0) / len(members), 3)
            first_failure = None
            for job, outcome in zip(members, outcomes):
                if job.id in done:
                    continue
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, _JOB_ERRORS):
                        raise outcome  # a bug, not a bad job: the traceback is wanted
                    message = _message(outcome)
                    _append_record(out, {"id": job.id, "status": "failed", "error": message}, shard)
                    result.failed += 1
                    result.errors[job.id] = message
                    first_failure = first_failure or (job.id, message)
                else:
                    _append_record(out, {"id": job.id, "status": "ok", "outputs": outcome, "seconds": seconds,
                                         "batch": len(members), "job": job.record()}, shard)
                    result.done += 1
                if bar is not None:
                    bar.update(1)
            if fail_fast and first_failure is not None:
                raise InputError(f"job {first_failure[0]!r} failed: {first_failure[1]}") from None
        finished = True
    finally:
        if bar is not None:
            bar.close(finished)
    result.seconds = time.perf_counter() - begin
    return result
