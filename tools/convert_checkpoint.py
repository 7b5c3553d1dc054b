#!/usr/bin/env python3
"""Convert a PyTorch checkpoint (legacy pre-zip format of PyTorch < 1.6, or zip) to
safetensors that `tailor model import` reads.

    python tools/convert_checkpoint.py model_best.pth.tar model_best.safetensors

Takes the `state_dict` entry when the file holds {'epoch', 'state_dict', 'prec'} (the ASEN
authors' container), strips a DataParallel `module.` prefix, drops the int64
`num_batches_tracked` counters, and keeps every other name as it is (the `embeddingnet.`
prefix is fine: tailor accepts names with or without it). Needs torch (CPU wheel is enough).
"""
import sys

import torch
from safetensors.torch import save_file


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    # weights_only=False: legacy checkpoints pickle plain dicts with an epoch and a float.
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(state, dict):
        sys.exit("%s: no state_dict found (top-level type %s)" % (src, type(state).__name__))
    out = {}
    for name, t in state.items():
        if not torch.is_tensor(t) or name.endswith("num_batches_tracked"):
            continue
        if name.startswith("module."):
            name = name[len("module."):]
        out[name] = t.detach().to(torch.float32).contiguous()
    save_file(out, dst)
    print("%s: %d tensors -> %s" % (src, len(out), dst))


if __name__ == "__main__":
    main()
