#!/usr/bin/env python3
"""PyTorch side of the forward-throughput bench (called by `cargo bench --bench forward`
when TAILOR_BENCH_PYTHON points at a Python with torch). Same model shape and settings as
the Rust side: ResNet-50 ASEN (tools/asen_ref.py's implementation), 224 px, random
weights, eval mode, fp32, NCHW and channels-last. Prints one JSON line per measurement."""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import asen_ref  # noqa: E402


def rate(fn, batch, iters):
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return batch * iters / (time.perf_counter() - t0)


def main():
    threads = int(os.environ.get("TAILOR_BENCH_THREADS", "2"))
    torch.set_num_threads(threads)
    batches = [int(b) for b in os.environ.get("TAILOR_BENCH_BATCHES", "16").split(",")]
    iters = int(os.environ.get("TAILOR_BENCH_ITERS", "3"))
    n_attr = 8
    cfg = asen_ref.config("asen", asen_ref.RESNET50, n_attr, 224, 512)
    model = asen_ref.Model(cfg).eval()
    trunk = model.backbonenet
    for layout in ["nchw", "channels_last"]:
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        model = model.to(memory_format=fmt)
        for b in batches:
            x = torch.randn(b, 3, 224, 224).contiguous(memory_format=fmt)
            with torch.inference_mode():
                def backbone():
                    trunk(x)

                def shared():
                    fmap, _ = trunk(x)
                    for a in range(n_attr):
                        model.head(fmap, torch.full((b,), a, dtype=torch.long))

                def per_attribute():
                    for a in range(n_attr):
                        model(x, torch.full((b,), a, dtype=torch.long))

                for name, fn, it in [("backbone", backbone, iters), ("shared", shared, iters),
                                     ("per_attribute", per_attribute, 1)]:
                    r = rate(fn, b, it)
                    print(json.dumps({"impl": "pytorch-" + layout, "what": name, "batch": b,
                                      "images_per_s": r, "threads": threads,
                                      "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
