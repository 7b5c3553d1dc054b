#!/usr/bin/env python3
"""Pretrains tailor's tiny backbone by multi-attribute classification (our stand-in for the
papers' ImageNet-pretrained ResNet-50) and writes it in the format `tailor train
--backbone-init` takes: torchvision names, no prefix, batch-norm running statistics.

    python tools/pretrain_trunk.py --catalog DIR --out trunk.safetensors [--epochs 12]

The catalog must be DISJOINT from the one the trunk is later evaluated on (e.g. `tailor
synth --seed 1`); only its `train` split is used. The trunk is AG-MAN's (layer1-4 and the
conv1_1 branch), so every architecture finds its tensors in the file; fc_embed is left
out (AG-MAN draws it fresh). Each tap the heads can read gets a classifier on its
global-average-pooled map: layer3 (every model), layer3 + conv1_1(layer2) (AG-MAN) and
layer4. The classifiers are thrown away.

    python tools/pretrain_trunk.py probe --trunk FILE --catalog DIR

probes a trunk: per attribute, a linear softmax classifier on the layer3 map (pooled and
flattened), trained on the catalog's train split, accuracy on its valid split. FILE may
also be a tailor model file (its trunk is probed).

    python tools/pretrain_trunk.py expected FILE

writes FILE's parity data (tailor's test compares its own forward of the trunk with it).

Needs torch, numpy, safetensors, Pillow; tools/asen_ref.py for the network.
"""
import argparse
import csv
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from asen_ref import IMAGENET_MEAN, IMAGENET_STD, TINY_BACKBONE, ResNetTrunk  # noqa: E402


def read_catalog(root, size):
    """Images (uint8 NHWC, resized + centre-cropped to `size`), labels [N, A] (-1 when
    missing), splits, attribute names and value counts, in schema order."""
    schema = json.load(open(os.path.join(root, "schema.json")))
    attrs = schema["attributes"] if isinstance(schema, dict) else schema
    names = [a["name"] for a in attrs]
    values = [a["values"] for a in attrs]
    rows = list(csv.DictReader(open(os.path.join(root, "manifest.csv"))))
    labels = np.array([[values[a].index(r[n]) if r.get(n) else -1 for a, n in enumerate(names)]
                       for r in rows], dtype=np.int64)
    split = np.array([r.get("split", "") for r in rows])
    images = np.stack([load_image(os.path.join(root, r["image"]), size) for r in rows])
    return images, labels, split, names, [len(v) for v in values]


def load_image(path, size):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = size / min(w, h)
    if (w, h) != (size, size):
        img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def normalise(batch_u8, flip=None):
    x = torch.from_numpy(batch_u8).float().permute(0, 3, 1, 2) / 255.0
    if flip is not None:
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


class Pretrainer(nn.Module):
    def __init__(self, n_values):
        super().__init__()
        self.trunk = ResNetTrunk(TINY_BACKBONE, n_logits=len(n_values))
        c3 = TINY_BACKBONE["widths"][2] * 4
        c4 = TINY_BACKBONE["widths"][3] * 4
        total = sum(n_values)
        self.n_values = n_values
        self.head3 = nn.Linear(c3, total)
        self.head_local = nn.Linear(c3, total)
        self.head4 = nn.Linear(c4, total)

    def forward(self, x):
        t = self.trunk
        x = F.max_pool2d(F.relu(t.bn1(t.conv1(x))), 3, 2, 1)
        x2 = t.layer2(t.layer1(x))
        x3 = t.layer3(x2)
        local = x3 + t.conv1_1(F.max_pool2d(x2, 3, 2, 1))
        x4 = t.layer4(local)
        return [self.head3(x3.mean((2, 3))), self.head_local(local.mean((2, 3))),
                self.head4(x4.mean((2, 3)))]

    def loss(self, logits_list, labels):
        total, start = 0.0, 0
        for a, k in enumerate(self.n_values):
            y = labels[:, a]
            for logits in logits_list:
                total = total + F.cross_entropy(logits[:, start:start + k], y, ignore_index=-1)
            start += k
        return total / len(self.n_values)

    def accuracy(self, logits, labels):
        acc, start = [], 0
        for a, k in enumerate(self.n_values):
            y = labels[:, a]
            ok = y >= 0
            acc.append((logits[ok, start:start + k].argmax(1) == y[ok]).float().mean().item())
            start += k
        return acc


def recompute_batch_norm(model, images, batch):
    """Exact running statistics over the training images (cumulative average, no flip)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            model(normalise(images[i:i + batch]))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    model.eval()


def pretrain(args):
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    images, labels, split, names, n_values = read_catalog(args.catalog, args.size)
    tr = np.where(split == "train")[0]
    va = np.where(split == "valid")[0]
    print("catalog %s: %d train, %d valid images at %d px, read in %.1f s"
          % (args.catalog, len(tr), len(va), args.size, time.time() - t0), flush=True)
    model = Pretrainer(n_values)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(tr) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    lab = torch.from_numpy(labels)
    t_train = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = rng.permutation(tr)
        run, n = 0.0, 0
        for i in range(0, len(perm), args.batch):
            idx = perm[i:i + args.batch]
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            loss = model.loss(model(normalise(images[idx], flip)), lab[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            run += loss.item() * len(idx)
            n += len(idx)
        msg = "epoch %d: loss %.4f (%.0f images/s)" % (
            epoch + 1, run / n, n / max(1e-9, time.time() - t_train))
        if len(va):
            model.eval()
            with torch.no_grad():
                acc = model.accuracy(model(normalise(images[va]))[0], lab[va])
            msg += "; valid accuracy (layer3 pooled): " + " ".join(
                "%s %.3f" % (nm[:8], a) for nm, a in zip(names, acc))
        print(msg, flush=True)
        t_train = time.time()
    recompute_batch_norm(model, images[tr], 256)
    state = {k: v.detach().contiguous() for k, v in model.trunk.state_dict().items()
             if not k.endswith("num_batches_tracked") and not k.startswith("fc_embed.")}
    meta = {
        "tailor.trunk": json.dumps({
            "backbone": TINY_BACKBONE, "input_size": args.size, "catalog": args.catalog,
            "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "seed": args.seed,
            "task": "multi-attribute classification on pooled layer3/local/layer4 maps",
        })
    }
    save_file(state, args.out, metadata=meta)
    print("wrote %s (%d tensors) in %.0f s total" % (args.out, len(state), time.time() - t0))
    write_expected(args.out)


def write_expected(trunk_file):
    """Parity data for tailor's test: two random inputs and the trunk's eval-mode layer3
    maps (`FILE.expected.safetensors` beside the trunk)."""
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(2, 3, 64, 64, generator=g)
    maps = torch.from_numpy(layer3_maps(trunk_file, None, inputs))
    out = trunk_file.replace(".safetensors", "") + ".expected.safetensors"
    save_file({"inputs": inputs.contiguous(), "layer3": maps.contiguous()}, out)
    print("wrote", out)


def layer3_maps(trunk_file, images, inputs=None):
    """Eval-mode layer3 maps of uint8 images (or of normalised `inputs`)."""
    state = load_file(trunk_file)
    for prefix in ("backbonenet.", "embeddingnet."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    net = ResNetTrunk(TINY_BACKBONE)
    state = {k: v for k, v in state.items() if k.split(".")[0] in
             ("conv1", "bn1", "layer1", "layer2", "layer3")}
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        if inputs is not None:
            return net(inputs)[0].numpy()
        return torch.cat([net(normalise(images[i:i + 500]))[0]
                          for i in range(0, len(images), 500)]).numpy()


def linear_probe(xtr, ytr, xte, yte, k, epochs=25, seed=0):
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr = torch.tensor((xtr - mu) / sd, dtype=torch.float32)
    xte = torch.tensor((xte - mu) / sd, dtype=torch.float32)
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(xtr.shape[1], k)
    opt = torch.optim.Adam(lin.parameters(), 1e-2, weight_decay=1e-4)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), 256):
            idx = perm[i:i + 256]
            loss = F.cross_entropy(lin(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return (lin(xte).argmax(1) == yte).float().mean().item()


def probe(args):
    images, labels, split, names, n_values = read_catalog(args.catalog, args.size)
    x = layer3_maps(args.trunk, images)
    tr, te = split == "train", split == "valid"
    print("probe of %s on %s: layer3 map %s, %d train / %d valid images"
          % (args.trunk, args.catalog, tuple(x.shape[1:]), tr.sum(), te.sum()))
    print("%-15s %7s %8s %8s" % ("attribute", "chance", "pooled", "flat"))
    for a, name in enumerate(names):
        y = labels[:, a]
        ok_tr, ok_te = tr & (y >= 0), te & (y >= 0)
        chance = np.bincount(y[ok_te], minlength=n_values[a]).max() / ok_te.sum()
        pooled = linear_probe(x[ok_tr].mean((2, 3)), y[ok_tr], x[ok_te].mean((2, 3)), y[ok_te],
                              n_values[a])
        flat = linear_probe(x[ok_tr].reshape(ok_tr.sum(), -1), y[ok_tr],
                            x[ok_te].reshape(ok_te.sum(), -1), y[ok_te], n_values[a])
        print("%-15s %7.3f %8.3f %8.3f" % (name, chance, pooled, flat), flush=True)


def main():
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    if len(sys.argv) == 3 and sys.argv[1] == "expected":
        write_expected(sys.argv[2])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        p = argparse.ArgumentParser(prog="pretrain_trunk.py probe")
        p.add_argument("--trunk", required=True)
        p.add_argument("--catalog", required=True)
        p.add_argument("--size", type=int, default=64)
        probe(p.parse_args(sys.argv[2:]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--catalog", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    pretrain(p.parse_args())


if __name__ == "__main__":
    main()
