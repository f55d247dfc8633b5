import sys, torch, collections, math
from torchmetrics.functional.classification import binary_auroc
rows = []
for f in sys.argv[1:]:
    rows += torch.load(f, weights_only=False)
y = torch.tensor([r["success_pasted"] for r in rows])
sc = torch.tensor([r["score"] if r["direction"] > 0 else r["score"] - 100 for r in rows])
print("edits", len(rows), "success", float(y.float().mean()), "AUC", float(binary_auroc(sc, y.long())), "AUC raw score", float(binary_auroc(torch.tensor([r['score'] for r in rows]), y.long())))
n = len(rows)
import numpy as np
TH=[float(np.quantile(sc[sc>-50].numpy(), q)) for q in np.linspace(0.05,0.7,14)]
for thr in TH:
    took = sc > thr
    print(f"thr {thr:.4f}: silent {float((took & ~y).sum())/n:.3f} false {float((~took & y).sum())/n:.3f}")
# ladder simulation: rungs order
by = collections.defaultdict(dict)
for r in rows:
    by[(r["set"], r["pair"])][r["recipe"]] = r
def sim(order, thr):
    ok = 0; cost = 0; cnt = collections.Counter(); silent = 0; tot = 0
    for k, d in by.items():
        if not all(o in d for o in order): continue
        tot += 1
        kept = None; spent = 0
        tried = []
        for o in order:
            r = d[o]; spent += r["nfe"] + 72 - (0 if not tried else 72)  # inversion nfe counted once: r['nfe'] includes inversion 72
            tried.append(r)
            s = r["score"] if r["direction"] > 0 else r["score"] - 100
            if s > thr: kept = r; break
        if kept is None:
            kept = max(tried, key=lambda r: r["score"] if r["direction"] > 0 else r["score"] - 100)
        ok += kept["success_pasted"]; cost += spent; cnt[kept["recipe"]] += 1
    return ok / tot, cost / tot, cnt, tot
names = sorted({r["recipe"] for r in rows})
print({nm: round(sum(d[nm]["success_pasted"] for d in by.values() if nm in d)/sum(1 for d in by.values() if nm in d), 2) for nm in names})
for order in [["default"], ["default", "swap-none"], ["default", "swap-none", "p2p-none"], ["default", "p2p-none", "swap-none"], ["default", "swap-none", "p2p-none", "swap-noise-d2-g10"], ["default", "swap-none", "swap-noise-d2-g10"]]:
    for thr in TH[::3]:
        try:
            print(order, thr, sim(order, thr))
        except Exception as e:
            pass
