#!/usr/bin/env python3
"""PyTorch side of tools/device-check.sh, on a CUDA GPU, same shapes as tailor's
`gpu_throughput` device test: ResNet-50 ASEN (tools/asen_ref.py), 224 px, random weights,
eval mode, the trunk once + 8 attribute heads; images/s at each batch in fp32 (NCHW and
channels-last) and with bf16 and fp16 autocast (channels-last). Then end-to-end ASEN
training at batch 32 triplets (96 images, train mode, dot-product triplet margin loss,
Adam): triplets/s in fp32 and bf16 autocast. One JSON line per measurement.

Settings: TAILOR_DEVICE_BATCHES ("64,256"), TAILOR_DEVICE_ITERS (10), TAILOR_TRAIN_STEPS
(10). `--dry-run` runs every mode once at batch 2 and 64 px on whatever device there is
(CPU included) to check the script itself."""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
import asen_ref  # noqa: E402

N_ATTR = 8


def emit(**kv):
    print(json.dumps(dict(impl="pytorch", **kv)), flush=True)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, iters):
    fn()  # warm-up (cuDNN autotuning, allocator)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(dev)
    return time.perf_counter() - t0


def main():
    dry = "--dry-run" in sys.argv
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type != "cuda" and not dry:
        sys.exit("torch_device_bench.py: no CUDA device visible to PyTorch")
    torch.backends.cudnn.benchmark = True
    size = 64 if dry else 224
    batches = [2] if dry else [int(b) for b in os.environ.get("TAILOR_DEVICE_BATCHES", "64,256").split(",")]
    iters = 1 if dry else int(os.environ.get("TAILOR_DEVICE_ITERS", "10"))
    steps = 1 if dry else int(os.environ.get("TAILOR_TRAIN_STEPS", "10"))
    if dev.type == "cuda":
        emit(what="device", name=torch.cuda.get_device_name(dev), torch=torch.__version__,
             cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
             tf32_conv=torch.backends.cudnn.allow_tf32,
             tf32_matmul=torch.backends.cuda.matmul.allow_tf32)

    cfg = asen_ref.config("asen", asen_ref.RESNET50, N_ATTR, size, 512)
    model = asen_ref.Model(cfg).to(dev).eval()
    trunk = model.backbonenet
    modes = [
        ("fp32", torch.contiguous_format, None),
        ("fp32-channels-last", torch.channels_last, None),
        ("bf16-autocast-channels-last", torch.channels_last, torch.bfloat16),
        ("fp16-autocast-channels-last", torch.channels_last, torch.float16),
    ]
    for name, fmt, amp in modes:
        model = model.to(memory_format=fmt)
        for b in batches:
            x = torch.randn(b, 3, size, size, device=dev).contiguous(memory_format=fmt)
            ids = [torch.full((b,), a, dtype=torch.long, device=dev) for a in range(N_ATTR)]

            def run():
                with torch.inference_mode(), torch.autocast(dev.type, dtype=amp or torch.float32,
                                                            enabled=amp is not None):
                    fmap, _ = trunk(x)
                    embs = [model.head(fmap, i)[0] for i in ids]
                    torch.stack(embs).float().cpu()  # to the host, as tailor's embed

            secs = timed(run, dev, iters)
            emit(what="embed", mode=name, batch=b, images_per_s=round(b * iters / secs, 1))
        del x

    # Training, ASEN end to end.
    model = asen_ref.Model(cfg).to(dev).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    tb = 2 if dry else 32
    images = torch.randn(3 * tb, 3, size, size, device=dev).contiguous(memory_format=torch.channels_last)
    attrs = torch.randint(0, N_ATTR, (tb,), device=dev).repeat(3)
    for name, amp in [("fp32-channels-last", None), ("bf16-autocast-channels-last", torch.bfloat16)]:
        def step():
            with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
                emb, _, _ = model(images, attrs)
                a, n, p = emb[:tb].float(), emb[tb:2 * tb].float(), emb[2 * tb:].float()
                loss = torch.relu((a * n).sum(1) - (a * p).sum(1) + 0.2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        secs = timed(lambda: [step() for _ in range(steps)], dev, 1)
        emit(what="train", mode=name, batch=tb, triplets_per_s=round(tb * steps / secs, 1))


if __name__ == "__main__":
    main()
