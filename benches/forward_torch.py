#!/usr/bin/env python3
"""PyTorch side of the forward-throughput bench (called by `cargo bench --bench forward`
when TAILOR_BENCH_PYTHON points at a Python with torch; `bash tools/torch_venv.sh` makes
one). Same model shape and settings as the Rust side: ResNet-50 ASEN (tools/asen_ref.py's
implementation), 224 px, random weights, eval mode: fp32 NCHW, fp32 channels-last and bf16
autocast channels-last. Prints one JSON line per measurement, and per mode one line with
the oneDNN ISA and convolution implementations of a traced forward."""
import collections
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import asen_ref  # noqa: E402


def rate(fn, batch, iters):
    """(images per wall-clock second, images per CPU-second of this process)."""
    fn()  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        fn()
    n = batch * iters
    return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)


ISA = ["?"]


def trace(fn):
    """Runs fn once with oneDNN verbose output (written by C to fd 1, caught in a file):
    the ISA line and a count of the convolution implementations executed."""
    sys.stdout.flush()
    kernels = collections.Counter()
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(1)
        os.dup2(tmp.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                fn()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        for line in tmp.read().decode(errors="replace").splitlines():
            f = line.split(",")
            if "isa:" in line:
                ISA[0] = line.split("isa:", 1)[1].strip()
            if "exec" in f and "convolution" in f:
                kernels[f[f.index("convolution") + 1] + " " + next(
                    (x.split("::")[0] for x in f if x.startswith("src")), "")] += 1
    # oneDNN prints its ISA line once per process: later traces reuse it.
    isa = ISA[0] if kernels else "no oneDNN convolution ran (ATen's own kernels)"
    return {"isa": isa, "kernels": dict(kernels)}


def main():
    threads = int(os.environ.get("TAILOR_BENCH_THREADS", "2"))
    torch.set_num_threads(threads)
    batches = [int(b) for b in os.environ.get("TAILOR_BENCH_BATCHES", "16").split(",")]
    iters = int(os.environ.get("TAILOR_BENCH_ITERS", "3"))
    quick = os.environ.get("TAILOR_BENCH_QUICK", "0") != "0"
    n_attr = 8
    cfg = asen_ref.config("asen", asen_ref.RESNET50, n_attr, 224, 512)
    model = asen_ref.Model(cfg).eval()
    trunk = model.backbonenet
    modes = [("nchw", torch.contiguous_format, None),
             ("channels_last", torch.channels_last, None),
             ("channels_last-bf16", torch.channels_last, torch.bfloat16)]
    if quick:
        modes = modes[1:]
    for layout, fmt, dtype in modes:
        model = model.to(memory_format=fmt)
        for b in batches:
            x = torch.randn(b, 3, 224, 224).contiguous(memory_format=fmt)
            autocast = (lambda: torch.autocast("cpu", dtype=dtype)) if dtype else (
                lambda: torch.autocast("cpu", enabled=False))

            def backbone():
                with torch.inference_mode(), autocast():
                    trunk(x)

            def shared():
                with torch.inference_mode(), autocast():
                    fmap, _ = trunk(x)
                    for a in range(n_attr):
                        model.head(fmap, torch.full((b,), a, dtype=torch.long))

            def per_attribute():
                with torch.inference_mode(), autocast():
                    for a in range(n_attr):
                        model(x, torch.full((b,), a, dtype=torch.long))

            t = trace(backbone)
            print(json.dumps({"mode": "pytorch-" + layout, "trace": t}), flush=True)
            runs = [("backbone", backbone, iters), ("shared", shared, iters)]
            if not quick:
                runs.append(("per_attribute", per_attribute, 1))
            for name, fn, it in runs:
                r, r_cpu = rate(fn, b, it)
                print(json.dumps({"impl": "pytorch-" + layout, "what": name, "batch": b,
                                  "images_per_s": r, "images_per_cpu_s": r_cpu,
                                  "threads": threads, "isa": torch.backends.cpu.get_cpu_capability(),
                                  "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
