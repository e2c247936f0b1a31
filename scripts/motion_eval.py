"""Issue 24: what a model knows about motion on the synthetic validation videos, from the feature cache.

  PYTHONPATH=src .venv/bin/python scripts/motion_eval.py RUN_DIR|zs FEATURES [--val DIR] [--json OUT]

Prints (and with --json writes) three measures, each over the 500 validation videos:
  qa         greedy answers to "which way does the <shape> move?" (as `finetune --val` scores them): accuracy,
             the answers' distribution and the confusion matrix
  retrieval  motion-only caption retrieval with the contrastive embeddings: each video's first caption
             ("a small red circle moving left") is written with each of the 4 directions; video->text: the share
             of videos whose own direction's caption scores highest of the 4 (chance 25%); text->video: for each
             caption with each direction, R@1 among the videos that share its words but the direction word
             (the same object moving 4 ways is not in the set, so this ranks the videos of that object by motion)
  captions   beam-search captions (`generate`'s defaults): the share that name a direction, and the share
             that name the right one
RUN_DIR: a finetuning run of videococa-tiny (`finetune --out`); zs: the zero-shot model.
"""
import argparse, collections, json, re
import torch, videococa
from videococa.synthetic.benchmark import load_benchmark, make_benchmark
from videococa.train import FeatureCache, clip_key

DIRS = ["left", "right", "up", "down"]
MOVING = re.compile(r"\b(?:moving )?(left|right|up|down)\b")  # "a red circle moving left", "a red circle up"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run", help="finetuning run directory, or zs")
    ap.add_argument("features", help="feature cache of videococa-tiny, 8 frames, holding the validation videos")
    ap.add_argument("--val", default=None, help="synthetic benchmark folder (default: 500 videos, seed 2022)")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--skip-captions", action="store_true")
    args = ap.parse_args()
    items, _ = load_benchmark(args.val or make_benchmark(None, num_videos=500))
    cache = FeatureCache(args.features)
    m = (videococa.load_model("videococa-tiny", precision="fp32") if args.run == "zs"
         else videococa.load_model("videococa-tiny", finetuned=args.run, precision="fp32"))
    tokens = torch.stack([cache.get(clip_key(it.path)).float() for it in items])  # (V, T, N, W)
    emb, gen = zip(*[m.pool_frame_tokens(tokens[i:i + 50]) for i in range(0, len(items), 50)])
    emb, gen = torch.cat(emb), torch.cat(gen)  # (V, E) normalised, (V, Q-1, E)
    motion = [[(q, a) for q, a, k in it.questions if k == "motion"][0] for it in items]
    truth = [a for _, a in motion]
    out = {"run": args.run, "videos": len(items)}

    # qa
    preds = []
    for i in range(0, len(items), 50):
        preds += m.answer(questions=[q for q, _ in motion[i:i + 50]], video_tokens=gen[i:i + 50])
    words = [p if p in DIRS else "other" for p in preds]  # a run not trained on QA answers anything
    conf = collections.Counter(zip(truth, words))
    out["qa"] = {"accuracy": sum(t == p for t, p in zip(truth, preds)) / len(truth),
                 "answers": dict(collections.Counter(words)),
                 "confusion": {t: {p: conf[(t, p)] for p in DIRS + ["other"]} for t in DIRS}}

    # retrieval on motion-only captions
    stems = [MOVING.split(it.captions[0])[0].strip() for it in items]  # "a small red circle"
    texts = [f"{s} moving {d}" for s in stems for d in DIRS]
    temb = torch.cat([m.encode_text(texts[i:i + 200]) for i in range(0, len(texts), 200)]).view(len(items), 4, -1)
    sims = torch.einsum("ve,vde->vd", emb, temb)  # (V, 4) each video vs its 4 captions
    v2t = float((sims.argmax(1) == torch.tensor([DIRS.index(t) for t in truth])).float().mean())
    groups = collections.defaultdict(list)  # caption stem -> videos
    for i, s in enumerate(stems):
        groups[s].append(i)
    hits = total = 0
    chance = 0.0
    for s, vids in groups.items():
        if len({truth[v] for v in vids}) < 2:
            continue  # every video of this object moves the same way: nothing to rank by motion
        for d in DIRS:
            right = [v for v in vids if truth[v] == d]
            if not right:
                continue
            scores = temb[vids[0], DIRS.index(d)] @ emb[vids].T  # (len(vids),)
            hits += int(vids[int(scores.argmax())] in right)
            chance += len(right) / len(vids)
            total += 1
    out["retrieval"] = {"video_to_text_4way": v2t, "text_to_video_r1_same_object": hits / max(total, 1),
                        "text_to_video_chance": chance / max(total, 1), "text_to_video_queries": total}

    if not args.skip_captions:
        caps = []
        for i in range(0, len(items), 50):
            caps += m.generate(video_tokens=gen[i:i + 50])
        named = [MOVING.search(c) for c in caps]
        out["captions"] = {"name_a_direction": sum(x is not None for x in named) / len(caps),
                           "name_the_right_direction": sum(x is not None and x.group(1) == t
                                                           for x, t in zip(named, truth)) / len(caps),
                           "examples": caps[:3]}
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
