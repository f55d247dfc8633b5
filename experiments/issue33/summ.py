import json, sys, os
sys.path.insert(0, "src")
from unsample_lab.bench.check_calibration import check_calibration
for t in ("unet", "flow"):
    for run in ("calib", "clean-ladder", "bg-check", "robust-check", "robust-ladder", "bg-ladder"):
        p = f"out/i33/{t}-{run}/results.json"
        if not os.path.exists(p): continue
        d = json.load(open(p)); rows = d["per_pair"]
        c = check_calibration(rows)
        print(f"## {t} {run}: {d['command']}")
        print("   all:", {k: round(v, 3) for k, v in c.items()})
        for s in d["summary"]:
            if s["kind"] == "all":
                print(f"   {s['set']:<13} {s['control']:<5} {s['mask']:<6} n={s['pairs']} success={s['success']:.3f} success_paste={s.get('success_paste', float('nan')):.3f} bg={s['bg_psnr']:.2f} bg_paste={s.get('bg_psnr_paste', float('nan')):.2f} floor={s['floor_psnr']:.2f} nfe={s['nfe']:.0f}")
        sets = sorted({r["set"] for r in rows})
        if len(sets) > 1:
            for st in sets:
                c = check_calibration([r for r in rows if r["set"] == st])
                print(f"   set {st}:", {k: round(v, 3) for k, v in c.items()})
