"""Issue 24: predicted vs true direction for the motion questions of the synthetic validation set.

  PYTHONPATH=src .venv/bin/python scripts/motion_confusion.py RUN_DIR|zs FEATURES [VAL_BENCHMARK_DIR]
(greedy answers, as `finetune --val` scores them; tokens pooled from the feature cache)
"""
import sys, collections, torch, videococa
from videococa.synthetic.benchmark import load_benchmark
from videococa.train import FeatureCache, clip_key
from videococa.synthetic.benchmark import make_benchmark
run = sys.argv[1]
val = sys.argv[3] if len(sys.argv) > 3 else make_benchmark(None, num_videos=500)
items, _ = load_benchmark(val)
cache = FeatureCache(sys.argv[2])
m = videococa.load_model('videococa-tiny', finetuned=run, precision='fp32') if run != 'zs' else videococa.load_model('videococa-tiny', precision='fp32')
qs, ys, toks = [], [], []
for it in items:
    for q, a, k in it.questions:
        if k == 'motion':
            qs.append(q); ys.append(a); toks.append(cache.get(clip_key(it.path)).float())
conf = collections.Counter()
preds = []
for i in range(0, len(qs), 50):
    _, gen = m.pool_frame_tokens(torch.stack(toks[i:i+50]))
    preds += m.answer(questions=qs[i:i+50], video_tokens=gen)
for y, p in zip(ys, preds): conf[(y, p)] += 1
print('true distribution', collections.Counter(ys))
print('pred distribution', collections.Counter(preds))
print('acc', sum(y == p for y, p in zip(ys, preds)) / len(ys))
for y in ['left','right','up','down']:
    print(y, {p: conf[(y, p)] for p in sorted(set(preds))})
