import sys, torch, itertools
from torchmetrics.functional.classification import binary_auroc
feats = []
for f in sys.argv[1:]:
    feats += torch.load(f, weights_only=False)
rows = [f for f in feats if f["recipe"] != "exact-target"]
y = torch.tensor([f["success"] for f in rows]).long()
print("edits", len(rows), "success", float(y.float().mean()))
ex = [f for f in feats if f["recipe"] == "exact-target"]
L = 9
def scores(fn):
    return torch.tensor([float(fn(f)) for f in rows])
def auc(s):
    return float(binary_auroc(s, y))
res = []
for region in ("mask", "all", "exact"):
    for lv in [(2,), (4,), (6,), (0, 1, 2), (2, 4, 6), (1,2,3,4), tuple(range(9))]:
        sel = list(lv)
        def E(f, p, z): return f["E"][region][sel, p, z].mean()
        cands = {
            "gap_edit": lambda f: E(f,0,0) - E(f,1,0),
            "gap_rel": lambda f: (E(f,0,0) - E(f,1,0)) / (E(f,1,1) - E(f,0,1)).abs().clamp(min=1e-6),
            "gap_edit-gap_src": lambda f: (E(f,0,0) - E(f,1,0)) + (E(f,1,1) - E(f,0,1)),
            "fit": lambda f: -(E(f,1,0) - E(f,0,1)),
            "fitrel": lambda f: -(E(f,1,0) / E(f,0,1)),
            "null_gain": lambda f: (E(f,2,0) - E(f,1,0)) / (E(f,2,1) - E(f,0,1)).clamp(min=1e-6),
            "minmargin": lambda f: torch.minimum((E(f,0,0) - E(f,1,0)) / (E(f,1,1) - E(f,0,1)).abs().clamp(min=1e-6), -(E(f,1,0) / E(f,0,1)) + 1.5),
        }
        for n, fn in cands.items():
            res.append((auc(scores(fn)), region, lv, n))
res.sort(reverse=True)
for r in res[:25]: print("%.3f %s %s %s" % r)
