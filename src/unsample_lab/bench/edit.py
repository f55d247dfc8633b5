"""``unsample bench edit``: edits with exact right answers, from the shapes world's edit pairs.

Each pair changes one thing (an object's colour, shape or size, or the background) and carries
the exact target render and the edit mask. For every method x control we invert the source with
the source caption, edit with the target caption, and measure: edit success (the analytic
detector reads the target caption's objects and background in the edited image), MSE / PSNR /
SSIM of the background outside the edit mask (against the source), PSNR to the exact target
render, model evaluations and wall time. Results are grouped by edit kind. Each masked edit is
scored with paste-back (the input's own pixels outside its mask) and without
(`unsample_lab.bench.paste`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

import unsample
from unsample import defaults
from unsample.editing.spec import EditSpec
from unsample.editing.tokens import changed_words
from unsample.errors import InputError
from unsample.images import fit_image, load_image
from unsample.methods.registry import get_method
from unsample_lab.bench.check_calibration import calibration_table, check_calibration, ladder_table
from unsample_lab.bench.paste import PASTE_KEYS, paste_figures, paste_table
from unsample_lab.bench.report import report_folder, run_metadata, write_csv, write_json
from unsample_lab.bench.stats import decoded_uint8, image_metrics
from unsample_lab.shapes import SHAPES, detect, detection_matches, random_edit_pairs
from unsample_lab.shapes.backgrounds import NEW_BACKGROUNDS, background_pair, background_seed
from unsample_lab.shapes.object_judge import object_judge
from unsample_lab.shapes.robustness import ROBUSTNESS_VARIANTS, pair_seed, perturb_pair

CONTROLS: dict[str, dict[str, Any]] = {
    "swap": {"control": "none"},
    "p2p": {"control": "replace"},
    "direct+p2p": {"control": "replace", "direct": True},
}
MASKS: tuple[str, ...] = ("none", "noise", "attention", "intersect", "exact")
"""Edit masks the bench runs: `unsample.edit`'s sources, and "exact": the pair's own mask of
changed pixels given as a user mask (an oracle: what a perfect mask would give)."""


@dataclass(frozen=True)
class EditBench:
    methods: tuple[str, ...] = ("ddim", "null-text", "edict")
    controls: tuple[str, ...] = tuple(CONTROLS)
    masks: tuple[str, ...] = ("none",)
    mask_rule: str = "diffedit"
    """The noise mask's threshold rule (`unsample.editing.masks.NoiseMaskConfig.rule`)."""
    mask_smooth: int = 0
    """The noise mask's smoothing radius in latent cells (`NoiseMaskConfig.smooth`)."""
    mask_dilate: int = 0
    blend_start: float = 0.0
    robustness: bool = False
    """Run the pairs under every robustness variant (`unsample_lab.shapes.robustness`) instead of clean."""
    backgrounds: bool = False
    """Run the object-edit pairs over every new background (`unsample_lab.shapes.backgrounds`)."""
    variants: tuple[str, ...] = ()
    """Variants to run, robustness ones and new backgrounds (empty: every one of the families asked for)."""
    pairs: int = 50
    kinds: tuple[str, ...] = ("color", "shape", "size", "background")
    steps: int = 50
    inversion_guidance: float | None = None
    """CFG of the inversion; None: the edit's (the guidance every method's replay runs at)."""
    edit_guidance: float = 5.0
    start_step: int = 0
    cross_steps: float = 0.8
    self_steps: float = 0.4
    seed: int = 0
    images_dir: str | None = None
    prompts_file: str | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    check: bool = False
    """Run the edit check (`unsample.editing.check`) on every edit and report its calibration."""
    ladder: bool = False
    """Escalate through the recipe ladder (`unsample.editing.ladder`) when the check says an edit did not take."""
    paste_seam: int = defaults.PASTE_SEAM
    """Paste-back's seam width in pixels (`unsample.editing.paste`)."""
    fit: str = "area"
    """How a folder's images are sized (`unsample.images`); the shapes world is square at the model's size."""

    def edit_spec(self, method: str) -> EditSpec:
        """The settings every edit row of ``method`` shares (each row adds its prompt, control and mask)."""
        return EditSpec(
            start_step=self.start_step, guidance=self.edit_guidance, cross_steps=self.cross_steps,
            self_steps=self.self_steps, mask_dilate=self.mask_dilate, blend_start=self.blend_start,
            mask_rule=self.mask_rule, mask_smooth=self.mask_smooth, method=method, steps=self.steps,
            inversion_guidance=self.inversion_cfg, options=dict(self.options.get(method, {})), seed=self.seed,
            check=self.check or self.ladder, escalate=self.ladder, paste_seam=self.paste_seam,
        )

    @property
    def variant_names(self) -> tuple[str, ...]:
        """The sets to run besides clean: ``variants``, or every variant of the families asked for."""
        return self.variants or ((ROBUSTNESS_VARIANTS if self.robustness else ())
                                 + (NEW_BACKGROUNDS if self.backgrounds else ()))

    @property
    def inversion_cfg(self) -> float:
        return self.edit_guidance if self.inversion_guidance is None else self.inversion_guidance


@dataclass(frozen=True)
class EditCase:
    """One edit to run: a source image and captions; the exact target and a judge when known."""

    name: str
    kind: str
    source: np.ndarray  # uint8 (H, W, 3)
    source_caption: str
    target_caption: str
    mask: np.ndarray  # bool (H, W): pixels the edit may change; the rest is background
    blend_words: tuple[str, ...]
    target: np.ndarray | None = None
    judge: Callable[[np.ndarray], bool] | None = None
    variant: str = "clean"


def blend_words_for(pair: Any) -> tuple[str, ...]:
    """The words whose attention marks the region an edit may change."""
    removed, added = changed_words(pair.source_caption, pair.target_caption)
    words = set(removed + added)
    if pair.object_index is not None:
        words.add(pair.source.scene.objects[pair.object_index].shape)
        words.add(pair.target.scene.objects[pair.object_index].shape)
    else:
        words.add("background")
    return tuple(sorted(w for w in words if w in SHAPES or w in removed + added or w == "background"))


def shapes_cases(bench: EditBench, resolution: int) -> list[EditCase]:
    """Held-out edit pairs of the shapes world: exact targets, judged by the analytic detector."""
    def judge_for(caption: str, kind: str) -> Callable[[np.ndarray], bool]:
        return lambda img: bool(detection_matches(detect(img), caption, check_size=kind == "size",
                                                  check_texture=kind == "background"))

    pairs = random_edit_pairs(bench.pairs, bench.seed, kinds=bench.kinds, size=resolution, split="heldout")
    if bench.robustness or bench.backgrounds:
        out = []
        for variant in bench.variant_names:
            if variant in NEW_BACKGROUNDS:
                out += background_cases(pairs, variant, bench.seed)
                continue
            for k, p in enumerate(pairs):
                q = perturb_pair(p, variant, pair_seed(bench.seed, k, variant))
                out.append(EditCase(
                    name=f"pair{k:03d}", kind=p.kind, source=q.source, source_caption=p.source_caption,
                    target_caption=p.target_caption, mask=np.asarray(q.mask, dtype=bool), blend_words=blend_words_for(p),
                    target=q.target, judge=judge_for(p.target_caption, p.kind), variant=variant))
        return out
    return [
        EditCase(name=f"pair{k:03d}", kind=p.kind, source=p.source.image, source_caption=p.source_caption,
                 target_caption=p.target_caption, mask=np.asarray(p.mask, dtype=bool), blend_words=blend_words_for(p),
                 target=p.target.image, judge=judge_for(p.target_caption, p.kind))
        for k, p in enumerate(pairs)
    ]


def background_cases(pairs: list[Any], variant: str, seed: int) -> list[EditCase]:
    """The object-edit pairs over one new background, judged by their objects (`object_judge`);
    background-kind pairs are skipped (a new background replaces what they edit)."""
    out = []
    for k, p in enumerate(pairs):
        if p.object_index is None:
            continue
        q = background_pair(p, variant, background_seed(seed, k, variant))
        out.append(EditCase(
            name=f"pair{k:03d}", kind=p.kind, source=q.source, source_caption=p.source_caption,
            target_caption=p.target_caption, mask=np.asarray(q.mask, dtype=bool), blend_words=blend_words_for(p),
            target=q.target, judge=object_judge(q), variant=variant))
    return out


def folder_cases(images_dir: Path, prompts_file: Path, resolution: int, multiple: int = 16,
                 fit: str = "area") -> list[EditCase]:
    """Real images: JSONL lines {"image", "source_prompt", "target_prompt", optional "mask", "kind"}.

    Each image (and its mask) is sized by ``fit`` (`unsample.images`; "area" keeps its aspect
    ratio at about the model's pixel count), so its edit comes back at the same size.
    The mask is an image whose white pixels may change; without one the whole image counts as
    background (a structure-preservation score). There is no exact target or judge.
    """
    cases = []
    for n, line in enumerate(prompts_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            name, src, tgt = item["image"], item["source_prompt"], item["target_prompt"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"{prompts_file}:{n}: expected {{\"image\", \"source_prompt\", \"target_prompt\"}} ({err})") from None
        picture = fit_image(load_image(images_dir / name), resolution, multiple, fit)  # type: ignore[arg-type]
        image = np.asarray(picture)
        mask = np.zeros(image.shape[:2], dtype=bool)
        if item.get("mask"):
            m = fit_image(load_image(images_dir / item["mask"]), resolution, multiple, fit)  # type: ignore[arg-type]
            mask = np.asarray(m.convert("L").resize(picture.size, Image.Resampling.NEAREST)) >= 128
        removed, added = changed_words(src, tgt)
        cases.append(EditCase(name=name, kind=str(item.get("kind", "real")), source=image, source_caption=src,
                              target_caption=tgt, mask=mask, blend_words=tuple(dict.fromkeys(removed + added))))
    if not cases:
        raise InputError(f"{prompts_file} lists no images")
    return cases


def load_cases(bench: EditBench, resolution: int, multiple: int = 16) -> list[EditCase]:
    if bench.images_dir or bench.prompts_file:
        if not (bench.images_dir and bench.prompts_file):
            raise InputError("--images and --prompts go together: a folder and a JSONL of source/target prompts")
        return folder_cases(Path(bench.images_dir), Path(bench.prompts_file), resolution, multiple, bench.fit)
    return shapes_cases(bench, resolution)


def autoencoder_floor(model: Any, case: EditCase) -> dict[str, float]:
    """The autoencoder's own encode-decode of the source, scored on the same background pixels."""
    pixels = torch.from_numpy(case.source.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    floor = decoded_uint8(model, model.encode_image(pixels.to(model.device)))
    return image_metrics(floor, case.source, ~case.mask)


ATTENTION_MASKS = ("attention", "intersect")


def runnable_on(model: Any, bench: EditBench) -> tuple[EditBench, str]:
    """The bench without what ``model`` cannot run (prompt-to-prompt controls and attention masks
    on a model without hookable cross-attention, e.g. SD3 / Flux), and a sentence naming what was left out."""
    if model.supports_attention_control:
        return bench, ""
    controls = tuple(c for c in bench.controls if CONTROLS[c]["control"] == "none")
    masks = tuple(m for m in bench.masks if m not in ATTENTION_MASKS)
    left = [c for c in bench.controls if c not in controls] + [f"mask {m}" for m in bench.masks if m not in masks]
    if not left:
        return bench, ""
    if not controls or not masks:
        raise InputError(f"{type(model).__name__} has no cross-attention the editor can hook, and every control or "
                         f"mask asked for needs it ({', '.join(left)}); ask for swap and none / noise / exact masks")
    return dataclasses.replace(bench, controls=controls, masks=masks), (
        f"{type(model).__name__} has no cross-attention the editor can hook: left out {', '.join(left)}")


FLOWEDIT = "flowedit"
"""Not an inversion method: `unsample.flowedit` edits without inverting. In the bench it is a row
with the swap control and no mask, its source CFG the bench's inversion guidance, its target CFG
the edit guidance, and the paper's share of skipped steps (17 of 50)."""


def _scored_row(model: Any, case: EditCase, floor: dict[str, float], latent: Any, labels: tuple[str, str, str],
                cost: dict[str, float], shown: dict[str, list[tuple[np.ndarray, ...]]], gallery: int,
                progress: bool, edit: Any = None) -> dict[str, Any]:
    """One pair's row: ``latent`` decoded and scored against the case (edit success, background
    and target figures), ``labels`` = (method, control, mask), ``cost`` = its mask_area, nfe,
    seconds and edit_seconds; the first ``gallery`` edits of each row are kept in ``shown``. With
    ``edit`` (the `EditSample`), also its paste-back figures (`unsample_lab.bench.paste`)."""
    nan = float("nan")
    method, control, mask = labels
    edited = np.asarray(edit.decoded) if edit is not None and edit.decoded is not None else decoded_uint8(model, latent)
    bg = image_metrics(edited, case.source, ~case.mask)
    row = {
        "set": case.variant, "method": method, "control": control, "mask": mask, "kind": case.kind, "pair": case.name,
        "success": case.judge(edited) if case.judge else nan,
        "judge_ceiling": case.judge(case.target) if case.judge and case.target is not None else nan,
        "bg_mse": bg["mse"], "bg_psnr": bg["psnr"], "bg_ssim": bg["ssim"], "floor_psnr": floor["psnr"],
        "target_psnr": image_metrics(edited, case.target)["psnr"] if case.target is not None else nan,
    } | cost | (paste_figures(edit, case, edited) if edit is not None else dict.fromkeys(PASTE_KEYS, nan))
    key = f"{method} / {control} / {mask}" + ("" if case.variant == "clean" else f" / {case.variant}")
    if len(shown[key]) < gallery:
        shown[key].append((case.source, edited) + ((case.target,) if case.target is not None else ()))
    if progress:
        print(f"  {case.variant:<12} {method:>12} {control:<10} {mask:<9} {case.kind:<10} ok={row['success']!s:<5} "
              f"bg_psnr={bg['psnr']:.1f} (floor {floor['psnr']:.1f}) ({cost['edit_seconds']:.1f} s)", flush=True)
    return row


def _flowedit_rows(model: Any, bench: EditBench, cases: list[EditCase], floors: list[dict[str, float]],
                   shown: dict[str, list[tuple[np.ndarray, ...]]], gallery: int, progress: bool) -> list[dict[str, Any]]:
    start = round(bench.steps * defaults.FLOWEDIT_START_STEP / defaults.FLOWEDIT_STEPS)
    rows = []
    for case, floor in zip(cases, floors):
        t = time.perf_counter()
        res = unsample.flowedit(model, Image.fromarray(case.source), case.source_caption, case.target_caption,
                                steps=bench.steps, start_step=start, source_guidance=bench.inversion_cfg,
                                target_guidance=bench.edit_guidance, seed=bench.seed, output="result")
        seconds = time.perf_counter() - t
        cost = {"mask_area": 1.0, "nfe": res.network_evaluations, "seconds": seconds, "edit_seconds": seconds}
        rows.append(_scored_row(model, case, floor, res.latent, (FLOWEDIT, "swap", "none"), cost, shown, gallery, progress))
    return rows


def run(model: Any, bench: EditBench, progress: bool = True, gallery: int = 4) -> dict[str, Any]:
    bench, skipped = runnable_on(model, bench)
    if skipped and progress:
        print(f"note: {skipped}", flush=True)
    cases = load_cases(bench, model.resolution, model.size_multiple)
    floors = [autoencoder_floor(model, case) for case in cases]
    rows: list[dict[str, Any]] = []
    shown: dict[str, list[tuple[np.ndarray, ...]]] = defaultdict(list)
    for method in bench.methods:
        if method == FLOWEDIT:
            rows += _flowedit_rows(model, bench, cases, floors, shown, gallery, progress)
            continue
        opts = bench.options.get(method, {})
        base = bench.edit_spec(method)
        for case, floor in zip(cases, floors):
            t0 = time.perf_counter()
            inv = unsample.invert(model, Image.fromarray(case.source), case.source_caption, method=method,
                                  steps=bench.steps, guidance=bench.inversion_cfg, seed=bench.seed, **opts)
            t_inv = time.perf_counter() - t0
            for control in bench.controls:
                c = CONTROLS[control]
                if c.get("direct") and not get_method(method).trajectory_is_sampler_path:
                    continue  # exact methods (EDICT, BDIA) reconstruct already: no Direct Inversion
                for mask in bench.masks:
                    spec: Any = case.mask if mask == "exact" else mask
                    if mask in ("attention", "intersect") and not case.blend_words:
                        continue
                    t = time.perf_counter()
                    row_spec = base.replace(
                        target_prompt=case.target_caption, control=c["control"], direct=bool(c.get("direct")), mask=spec,
                        blend_words=case.blend_words if mask in ("attention", "intersect") else (),
                    )
                    res = unsample.edit(model, inv, row_spec, output="result")
                    seconds = time.perf_counter() - t
                    cost = {"mask_area": float(res.mask.float().mean()) if res.mask is not None else 1.0,  # no mask: all may change
                            "nfe": inv.nfe + res.network_evaluations, "seconds": t_inv + seconds, "edit_seconds": seconds,
                            "check_score": res.check.score if res.check is not None else None,
                            "check_took": res.check.edit_took if res.check is not None else None,
                            "rung": res.ladder.kept if res.ladder is not None else None,
                            "rungs_tried": len(res.ladder.attempts) if res.ladder is not None else 1,
                            "representable": res.input_fidelity.representable if res.input_fidelity else None}
                    rows.append(_scored_row(model, case, floor, res.latent, (method, control, mask), cost, shown,
                                            gallery, progress, res))
    return {"per_pair": rows, "summary": summarise(rows), "gallery": shown, "skipped": skipped}


def _mean(values: list[float]) -> float:
    """Mean over the finite values (NaN when a figure is unknown for every item, e.g. real images)."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


SUMMARY_KEYS = ("success", "judge_ceiling", "bg_psnr", "floor_psnr", "bg_ssim", "bg_mse", "target_psnr", "mask_area",
                "nfe", "seconds", *PASTE_KEYS)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means per set x method x control x mask x kind, and over all kinds ("all")."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        key = (r.get("set", "clean"), r["method"], r["control"], r.get("mask", "none"))
        groups[key + (r["kind"],)].append(r)
        groups[key + ("all",)].append(r)
    out = []
    for (set_, method, control, mask, kind), items in groups.items():
        out.append({"set": set_, "method": method, "control": control, "mask": mask, "kind": kind, "pairs": len(items)}
                   | {key: _mean([x.get(key, float("nan")) for x in items]) for key in SUMMARY_KEYS})
    return sorted(out, key=lambda r: (r["set"] != "clean", r["set"], r["kind"] != "all", r["kind"], r["method"],
                                      r["control"], r["mask"]))


def _cell(value: float, spec: str, scale: float = 1.0, unit: str = "") -> str:
    return f"{scale * value:{spec}}{unit}" if np.isfinite(value) else "n/a"


def report_table(summary: list[dict[str, Any]], kind: str = "all", set_: str | None = None) -> str:
    """One markdown table of the summary rows of ``kind`` (and of one set, or every set)."""
    lines = ["| set | method | control | mask | pairs | edit success | background PSNR dB | autoencoder floor dB "
             "| background SSIM | PSNR to exact target dB | mask area | NFE / pair (all branches) | s / pair |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        if r["kind"] == kind and (set_ is None or r["set"] == set_):
            lines.append(f"| {r['set']} | {r['method']} | {r['control']} | {r['mask']} | {r['pairs']} | "
                         f"{_cell(r['success'], '.0f', 100, '%')} | {_cell(r['bg_psnr'], '.2f')} | "
                         f"{_cell(r['floor_psnr'], '.2f')} | {_cell(r['bg_ssim'], '.4f')} | {_cell(r['target_psnr'], '.2f')} | "
                         f"{_cell(r['mask_area'], '.0f', 100, '%')} | {r['nfe']:.0f} | {r['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def write_gallery(shown: dict[str, list[tuple[np.ndarray, ...]]], path: Path, scale: int = 2) -> None:
    """A sheet of a few edits per method x control: source | edited (| exact target when known)."""
    if not shown:
        return
    first = next(iter(shown.values()))[0]
    side, cols = first[0].shape[0] * scale, len(first)
    per = max(len(v) for v in shown.values())
    sheet = Image.new("RGB", (170 + per * (cols * side + 12), len(shown) * (side + 6) + 16), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((170, 2), "each group: source | edited" + (" | exact target" if cols == 3 else ""), fill="black")
    for r, (key, items) in enumerate(shown.items()):
        y = 16 + r * (side + 6)
        draw.text((4, y + side // 2 - 6), key, fill="black")
        for c, group in enumerate(items):
            for j, arr in enumerate(group):
                img = Image.fromarray(arr).resize((side, side), Image.Resampling.NEAREST)
                sheet.paste(img, (170 + c * (cols * side + 12) + j * side, y))
    sheet.save(path)


def plot_frontier(summary: list[dict[str, Any]], path: Path) -> None:
    """Background PSNR against network evaluations per pair, one marker per method x control."""
    import matplotlib  # heavy; the Agg backend is chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in summary:
        if r["kind"] == "all" and r["set"] == "clean" and np.isfinite(r["bg_psnr"]):
            ax.scatter(r["nfe"], r["bg_psnr"], label=f"{r['method']} / {r['control']} / {r['mask']}")
    ax.set_xlabel("network evaluations per pair (inversion + edit, both branches)")
    ax.set_ylabel("background PSNR dB (outside the edit mask)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write_report_files(result: dict[str, Any], bench: EditBench, out: Path, command: str, model: Any) -> None:
    write_json(out / "results.json", {**run_metadata(command, bench, model), "summary": result["summary"],
                                      "per_pair": result["per_pair"]})
    write_csv(out / "per_pair.csv", result["per_pair"])
    plot_frontier(result["summary"], out / "bg_psnr_vs_nfe.png")
    write_gallery(result["gallery"], out / "gallery.png")
    kinds = sorted({r["kind"] for r in result["summary"] if r["kind"] != "all"})
    sets = sorted({r["set"] for r in result["summary"]}, key=lambda v: (v != "clean", v))
    n_cases = len({r["pair"] for r in result["per_pair"]})
    body = f"# Edit benchmark\n\nCommand: `{command}`\n\nModel: {model.name} ({model.fingerprint}); {n_cases} edits " \
           f"({'from ' + str(bench.prompts_file) if bench.prompts_file else 'held-out shapes edit pairs'}" \
           f"{', robustness variants' if bench.robustness else ''}" \
           f"{', new backgrounds (object edits only)' if bench.backgrounds else ''}); " \
           f"inversion guidance {bench.inversion_cfg:g}, edit guidance {bench.edit_guidance:g}, {bench.steps} steps, " \
           f"noise-mask rule {bench.mask_rule} (smoothing {bench.mask_smooth}), mask dilation {bench.mask_dilate}, blend start {bench.blend_start:g}.\n\n"
    if result.get("skipped"):
        body += f"Not run: {result['skipped']}.\n\n"
    for set_ in sets:
        body += f"## {set_}: all kinds\n\n" + report_table(result["summary"], "all", set_)
        for kind in kinds:
            body += f"\n### {set_}: {kind}\n\n" + report_table(result["summary"], kind, set_)
        body += "\n"
    body += f"## Paste-back (seam {bench.paste_seam} px): decoded | pasted\n\n" + paste_table(result["summary"], "all")
    body += "\n"
    if bench.ladder:
        body += "## The recipe ladder\n\n" + ladder_table(result["per_pair"]) + "\n"
    if bench.check or bench.ladder:
        body += "## The edit check against the detector\n\n" + calibration_table(check_calibration(result["per_pair"]))
        for set_ in sets if len(sets) > 1 else ():  # each set's own: does the check flag its failures?
            rows = [r for r in result["per_pair"] if r["set"] == set_]
            body += f"\n### {set_}\n\n" + calibration_table(check_calibration(rows))
    body += "\n![background PSNR vs NFE](bg_psnr_vs_nfe.png)\n\n![gallery](gallery.png)\n"
    (out / "report.md").write_text(body)


def write_report(result: dict[str, Any], bench: EditBench, out: Path, command: str, model: Any) -> None:
    """Write the report folder ``out`` in full or not at all (`unsample_lab.bench.report.report_folder`)."""
    with report_folder(out) as tmp:
        _write_report_files(result, bench, tmp, command, model)
