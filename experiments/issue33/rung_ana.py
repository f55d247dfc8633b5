import sys, torch, collections
recs = []
for f in sys.argv[1:]:
    recs += torch.load(f, weights_only=False)
by = collections.defaultdict(dict)
for r in recs:
    by[(r["set"], r["pair"], r["kind"])][r["recipe"]] = r["success"]
names = list(next(iter(by.values())).keys())
full = {k: v for k, v in by.items() if len(v) == len(names)}
print("pairs", len(full))
for n in names:
    print(f"{n:<22} {sum(v[n] for v in full.values())/len(full):.2f}")
# greedy ladder from default
chosen = ["default"]; rem = [k for k, v in full.items() if not v["default"]]
print("default fails", len(rem), [k[2] for k in rem])
while rem:
    best = max((n for n in names if n not in chosen), key=lambda n: sum(full[k][n] for k in rem), default=None)
    if best is None: break
    gain = sum(full[k][best] for k in rem)
    if gain == 0: break
    chosen.append(best); rem = [k for k in rem if not full[k][best]]
    print("add", best, "fixes", gain, "remaining", len(rem))
