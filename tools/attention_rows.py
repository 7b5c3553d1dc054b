#!/usr/bin/env python3
"""Where a trained model's spatial attention goes, per attribute: the mean attention map
over a split's images (default: the first 500 test images), its mass per map row (top to
bottom) and its mean entropy beside the uniform map's. Evidence for the Table-1 analysis
(benches/train_table.results.md): attention on the garment region an attribute lives in.

    python tools/attention_rows.py MODEL.safetensors CATALOG_DIR [--split test] [--n 500]

Runs the model with tools/asen_ref.py (same tensor names as tailor; its forward matches
tailor's, tests/model_parity.rs). Needs torch, numpy, safetensors, Pillow.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from asen_ref import Model  # noqa: E402
from pretrain_trunk import normalise, read_catalog  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("catalog")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=500)
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    with safe_open(args.model, "pt") as f:
        cfg = json.loads(f.metadata()["tailor.model_config"])
    model = Model(cfg)
    saved = load_file(args.model)
    state = {}
    for name, own in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = own
        else:
            state[name] = saved[name[len("head."):] if name.startswith("head.") else name]
    model.load_state_dict(state)
    model.eval()
    images, _, split, names, _ = read_catalog(args.catalog, cfg["input_size"])
    picked = np.where(split == args.split)[0][: args.n]
    x = normalise(images[picked])
    print("%s on %d %s images" % (args.model, len(picked), args.split))
    with torch.no_grad():
        for a, name in enumerate(names):
            _, att, _ = model(x, torch.full((len(picked),), a, dtype=torch.long))
            mean = att.mean(0).numpy()
            p_ = att.clamp_min(1e-12)
            entropy = -(p_ * p_.log()).sum((1, 2)).mean().item()
            print("%-15s entropy %.2f (uniform %.2f)  row mass top->bottom %s"
                  % (name, entropy, np.log(mean.size), " ".join("%.2f" % v for v in mean.sum(1))))


if __name__ == "__main__":
    main()
