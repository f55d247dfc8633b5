"""Per-record denoising errors at many levels/draws under src/tgt/null prompts, on edit and source latents."""
import sys, torch
import unsample
from unsample.editing.masks import repeat_conditioning

name, inp, out = sys.argv[1:4]
model = unsample.load(name)
recs = torch.load(inp, weights_only=False)
levels = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
K = 6
feats = []
cache = {}
for r in recs:
    den = model.denoiser(r["src"], guidance=1.0, dtype=torch.float32)
    den = den.with_conditioning(den.cond.cat(model.encode_prompt(r["tgt"])).cat(model.encode_prompt("")))
    b = den.with_conditioning(repeat_conditioning(den.cond, 2 * K))
    g = torch.Generator().manual_seed(0)
    e, s = r["edited"].float(), r["source"].float()
    if len(sys.argv) > 4:
        with torch.no_grad():
            e = model.encode_image(model.decode_latent(e.to(model.device)).clamp(0, 1)).float().cpu() if hasattr(model, "decode_latent") else e
    labels = float(den.schedule.num_train_timesteps - 1)
    allE = []  # [L, 3 prompts, 2 latents, K, h, w] error maps
    with torch.no_grad():
        for lv in levels:
            t = torch.tensor(float(round(lv * labels)), dtype=torch.float64)
            a, sg = den.schedule.alpha_sigma_at(t.reshape(1))
            a, sg = a.float(), sg.float()
            n = torch.randn((K, *e.shape[1:]), generator=g)
            lat = torch.cat([e.expand(K, -1, -1, -1), s.expand(K, -1, -1, -1)])
            x = a * lat + sg * torch.cat([n, n])
            eps = b(torch.cat([x, x, x]), t)
            err = ((eps - torch.cat([n] * 6)) ** 2).mean(dim=1)  # [6K, h, w]
            allE.append(err.reshape(3, 2, K, *err.shape[-2:]))
    maps = torch.stack(allE)
    m = r["mask"]
    if m is None:
        m = torch.ones(maps.shape[-2:], dtype=torch.bool)
    em = r["exact_mask"].float()[None, None]
    exact_cells = torch.nn.functional.adaptive_avg_pool2d(em, maps.shape[-2:])[0, 0] > 0
    f = dict(mask=(maps * m).sum((-2, -1)) / m.sum(), all=maps.mean((-2, -1)),
             exact=(maps * exact_cells).sum((-2, -1)) / exact_cells.sum().clamp(min=1))
    feats.append({k: v for k, v in r.items() if k in ("set", "pair", "kind", "recipe", "success")} | {"E": f, "mask_area": float(m.float().mean()), "maps": maps, "m": m, "exact_cells": exact_cells})
torch.save(feats, out)
print(len(feats))
