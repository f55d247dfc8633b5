"""Candidate rungs at the default settings (edict inversion, 36 steps), one inversion per pair."""
import sys, torch, numpy as np
from PIL import Image
import unsample
from unsample.editing.spec import EditSpec
from unsample_lab.bench.edit import EditBench, shapes_cases
from unsample_lab.bench.stats import decoded_uint8

name, out, pairs = sys.argv[1], sys.argv[2], int(sys.argv[3])
sets = sys.argv[4] if len(sys.argv) > 4 else "clean"
model = unsample.load(name)
if sets == "clean":
    bench = EditBench(pairs=pairs)
elif sets == "robust":
    bench = EditBench(pairs=pairs, robustness=True)
else:
    bench = EditBench(pairs=pairs, backgrounds=True)
cases = shapes_cases(bench, model.resolution) if sets != "bg" else __import__("unsample_lab.bench.edit", fromlist=["x"]).load_cases(bench, model.resolution)
rungs = {
    "default": {},
    "swap-none": dict(mask="none"),
    "p2p-noise-d1-g7.5": dict(control="replace", mask_dilate=1, guidance=7.5),
    "swap-noise-d1-g7.5": dict(mask_dilate=1, guidance=7.5),
    "swap-none-g7.5": dict(mask="none", guidance=7.5),
    "p2p-none": dict(control="replace", mask="none"),
    "swap-noise-d2-g10": dict(mask_dilate=2, guidance=10.0),
}
if not model.supports_attention_control:
    rungs = {k: v for k, v in rungs.items() if v.get("control") != "replace"}
import os
records = torch.load(out, weights_only=False) if os.path.exists(out) else []
done = {(r['set'], r['pair']) for r in records}
for case in cases:
    if (case.variant, case.name) in done and sum(1 for r in records if (r['set'], r['pair']) == (case.variant, case.name)) == len(rungs):
        continue
    records = [r for r in records if (r['set'], r['pair']) != (case.variant, case.name)]
    spec0 = EditSpec(source_prompt=case.source_caption, target_prompt=case.target_caption, paste_back=False, check=False)
    inv = unsample.invert(model, Image.fromarray(case.source), case.source_caption, method=spec0.method, steps=spec0.steps,
                          guidance=spec0.inversion_guidance, seed=spec0.seed)
    for rname, r in rungs.items():
        res = unsample.edit(model, inv, spec0.replace(**r), output="result")
        img = decoded_uint8(model, res.latent)
        records.append(dict(set=case.variant, pair=case.name, kind=case.kind, recipe=rname, success=bool(case.judge(img)),
                            src=case.source_caption, tgt=case.target_caption, edited=res.latent.cpu(), source=inv.image_latent.cpu(),
                            mask=None if res.mask is None else res.mask.cpu(), exact_mask=torch.from_numpy(np.array(case.mask)),
                            nfe=inv.nfe + res.network_evaluations))
        print(case.variant, case.name, case.kind, rname, records[-1]["success"], records[-1]["nfe"], flush=True)
    torch.save(records, out)
torch.save(records, out)
