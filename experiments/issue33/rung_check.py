"""Score the rung records with the library check on the image the user gets (decode, paste back, encode)."""
import sys, torch, numpy as np
from PIL import Image
import unsample
from unsample.api.editing import _judged
from unsample.api.results import encode_pil
from unsample.editing.paste import paste_back
from unsample.editing.spec import EditSpec
from unsample.images import tensor_to_pil
from unsample_lab.bench.edit import EditBench, shapes_cases, load_cases
from unsample_lab.bench.stats import decoded_uint8
from unsample.inversion import Inversion

name, inp, out = sys.argv[1:4]
model = unsample.load(name)
recs = torch.load(inp, weights_only=False)
pairs = max(int(r["pair"][4:]) for r in recs) + 1
sets = sorted({r["set"] for r in recs})
cases = {}
for flag in ("clean", "robust", "bg"):
    b = EditBench(pairs=pairs, robustness=flag == "robust", backgrounds=flag == "bg")
    for c in load_cases(b, model.resolution):
        cases[(c.variant, c.name)] = c

class Inv:  # the bits _judged reads
    def __init__(self, z): self.image_latent = z
rows = []
for r in recs:
    case = cases[(r["set"], r["pair"])]
    dec = decoded_uint8(model, r["edited"].to(model.device))
    img = dec if r["mask"] is None or bool(r["mask"].all()) or len(sys.argv) > 4 else paste_back(dec, case.source, r["mask"], 1)
    ok_pasted = bool(case.judge(img))
    z = encode_pil(model, Image.fromarray(img))
    spec = EditSpec(target_prompt=r["tgt"])
    c = _judged(model, spec, r["src"], z, Inv(r["source"].to(model.device)), r["mask"])
    rows.append({k: r[k] for k in ("set", "pair", "kind", "recipe", "success", "nfe")} | {"success_pasted": ok_pasted, "score": c.score, "direction": c.direction, "took": c.edit_took, "stderr": c.stderr})
torch.save(rows, out)
print(len(rows))
