import sys, torch
from torchmetrics.functional.classification import binary_auroc
feats = []
for f in sys.argv[1:]:
    feats += torch.load(f, weights_only=False)
rows = [f for f in feats if f["recipe"] != "exact-target"]
y = torch.tensor([f["success"] for f in rows]).long()
res = []
for lv in [(1,), (2,), (3,), (1, 2), (1, 2, 3), (0,1,2,3,4)]:
    for reg in ("m", "exact_cells", "dil"):
        for q in (0.5, 0.75, 0.9, 1.0, "mean"):
            for kind in ("ratio", "diff", "lograt"):
                s = []
                for f in rows:
                    M = f["maps"][list(lv)].mean(0).mean(-3)  # [3 prompts, 2 latents, h, w]
                    a, b = M[1, 0], M[0, 1]  # edit|tgt, source|src
                    if reg == "dil":
                        cells = torch.nn.functional.max_pool2d(f["m"].float()[None, None], 3, 1, 1)[0, 0] > 0
                    else:
                        cells = f[reg]
                    if not cells.any(): cells = torch.ones_like(cells)
                    v = {"ratio": a / b, "diff": a - b, "lograt": torch.log(a / b)}[kind][cells]
                    s.append(float(v.mean() if q == "mean" else v.quantile(q)))
                res.append((float(binary_auroc(-torch.tensor(s), y)), lv, reg, q, kind))
res.sort(key=lambda r: -r[0])
for r in res[:15]: print(r)
