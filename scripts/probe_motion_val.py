"""Issue 24: linear probes of parameter-free saliency motion features, trained on the 600 synthetic training
videos and scored on the 500 validation videos (not a split of the training set as in probe_motion.py).

  PYTHONPATH=src .venv/bin/python scripts/probe_motion_val.py FEATURES
"""
import sys, torch, torch.nn.functional as F
from diagnose_motion import load, saliency
from videococa.train import FeatureCache
from videococa.synthetic.benchmark import make_benchmark
cache = FeatureCache(sys.argv[1])
Xtr, Ytr, _, _ = load(make_benchmark(None, num_videos=600, seed=7), cache)
Xva, Yva, _, _ = load(make_benchmark(None, num_videos=500), cache)
def feats(X):
    w = saliency(X)  # (V, T, P)
    T = w.shape[1]; t = torch.arange(T).float(); t = (t - t.mean()) / t.std()
    slope = torch.einsum('vtp,t->vp', w - w.mean(1, keepdim=True), t) / T  # (V, P)
    g = int(w.shape[-1] ** .5); grid = torch.arange(g).float() / (g - 1); wg = w.reshape(*w.shape[:2], g, g)
    c = torch.stack([(wg.sum(2) * grid).sum(-1), (wg.sum(3) * grid).sum(-1)], -1)  # (V,T,2)
    vel = torch.einsum('vtc,t->vc', c - c.mean(1, keepdim=True), t) / T
    return {'maps centred': (w - w.mean(1, keepdim=True)).flatten(1), 'slope map': slope, 'centroid velocity': vel,
            'centroid traj': (c - c.mean(1, keepdim=True)).flatten(1)}
def probe(a, y, b, yb, steps=500):
    mu, sd = a.mean(0), a.std(0) + 1e-5
    lin = torch.nn.Linear(a.shape[1], 4); opt = torch.optim.AdamW(lin.parameters(), 1e-2, weight_decay=1e-2)
    for _ in range(steps):
        opt.zero_grad(); F.cross_entropy(lin((a - mu) / sd), y).backward(); opt.step()
    with torch.no_grad():
        return float((lin((a-mu)/sd).argmax(1) == y).float().mean()), float((lin((b-mu)/sd).argmax(1) == yb).float().mean())
ftr, fva = feats(Xtr), feats(Xva)
for k in ftr: print(k, ftr[k].shape[1], probe(ftr[k], Ytr, fva[k], Yva))
