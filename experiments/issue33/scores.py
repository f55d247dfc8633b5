"""The score variants of docs/edit_check.md ("Why this score") on the features of check_feat.py:
AUC of the error difference, its log ratio and the ratio of means per model and level set, and the
median fit of the detector's successes and failures (the models' scale).

    python experiments/issue33/scores.py /tmp/r_unet_f.pt /tmp/r_flow_f.pt
"""
import sys

import torch
from torchmetrics.functional.classification import binary_auroc


def load(p):
    return [f for f in torch.load(p, weights_only=False) if f["recipe"] != "exact-target"]


for path in sys.argv[1:]:
    rows = load(path)
    y = torch.tensor([f["success"] for f in rows])
    for lv in ([1, 2, 3], [2], [1, 2], [2, 3]):
        def E(f, p, z):
            return f["E"]["mask"][lv, p, z]
        diff = torch.tensor([float((E(f, 0, 1) - E(f, 1, 0)).mean()) for f in rows])
        logr = torch.tensor([float((E(f, 0, 1).log() - E(f, 1, 0).log()).mean()) for f in rows])
        rat = torch.tensor([float(E(f, 0, 1).mean() / E(f, 1, 0).mean()) for f in rows])
        print(path, lv, "AUC diff %.3f log ratio %.3f ratio %.3f" % (binary_auroc(diff, y.long()),
                                                                   binary_auroc(logr, y.long()), binary_auroc(rat, y.long())))
        if lv == [1, 2, 3]:
            print(path, "median fit: successes %.3f failures %.3f" % (float(diff[y].median()), float(diff[~y].median())))
