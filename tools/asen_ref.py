#!/usr/bin/env python3
"""Independent PyTorch implementation of the ASEN model family (parity reference).

Written from the papers and ../shared/reference/asen-family.md (parameter names, shapes,
order of operations). It generates tailor's parity fixtures: tiny random models (weights
as safetensors with tailor's configuration in the metadata, and one authors'-style
`.pth.tar` zip checkpoint), random inputs and the expected eval-mode outputs.

    python tools/asen_ref.py fixtures            # writes fixtures/parity/
    python tools/asen_ref.py full OUT_DIR        # ResNet-50 ASEN, 224 px (for the ignored test)

Needs torch, numpy, safetensors (and torchvision + Pillow for the pre-processing fixture).
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
TINY_BACKBONE = {"kind": "tiny", "stem": 8, "widths": [4, 8, 16, 16], "blocks": [2, 1, 2, 1]}
RESNET50 = {"kind": "resnet50"}


def bb_stem(bb):
    return 64 if bb["kind"] == "resnet50" else bb["stem"]


def bb_widths(bb):
    return [64, 128, 256, 512] if bb["kind"] == "resnet50" else bb["widths"]


def bb_blocks(bb):
    return [3, 4, 6, 3] if bb["kind"] == "resnet50" else bb["blocks"]


class Bottleneck(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        idt = x if self.downsample is None else self.downsample(x)
        return F.relu(y + idt)


class ResNetTrunk(nn.Module):
    """ResNet cut after layer3, or AG-MAN's multi-level trunk when n_logits is given."""

    def __init__(self, bb, n_logits=None):
        super().__init__()
        widths, blocks = bb_widths(bb), bb_blocks(bb)
        self.conv1 = nn.Conv2d(3, bb_stem(bb), 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(bb_stem(bb))
        self.multi = n_logits is not None
        cin = bb_stem(bb)
        for l in range(4 if self.multi else 3):
            layer = []
            for i in range(blocks[l]):
                layer.append(Bottleneck(cin, widths[l], 2 if (i == 0 and l > 0) else 1))
                cin = widths[l] * 4
            setattr(self, "layer%d" % (l + 1), nn.Sequential(*layer))
        if self.multi:
            self.conv1_1 = nn.Conv2d(widths[1] * 4, widths[2] * 4, 1)
            self.fc_embed = nn.Linear(widths[3] * 4, n_logits)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x2 = self.layer2(self.layer1(x))
        x3 = self.layer3(x2)
        if not self.multi:
            return x3, None
        local = x3 + self.conv1_1(F.max_pool2d(x2, 3, 2, 1))
        logits = self.fc_embed(self.layer4(local).mean(dim=(2, 3)))
        return torch.cat([x3, local], 1), logits


def l2n(x):
    return x / torch.sqrt((x * x).sum(1, keepdim=True) + 1e-12)


def softmax_hw(logits):
    b = logits.shape[0]
    return F.softmax(logits.reshape(b, -1), dim=1)


class AsenHead(nn.Module):
    def __init__(self, c, hid, n, asa=True, aca=True):
        super().__init__()
        self.n, self.asa, self.aca = n, asa, aca
        if asa:
            self.mask_fc1 = nn.Linear(n, hid, bias=False)
            self.conv1 = nn.Conv2d(c, hid, 1)
            self.conv2 = nn.Conv2d(hid, 1, 1)
        if aca:
            self.mask_fc2 = nn.Linear(n, c, bias=False)
            self.fc1 = nn.Linear(2 * c, hid)
            self.fc2 = nn.Linear(hid, c)
        self.feature_fc = nn.Linear(c, c)

    def forward(self, x, attrs):
        b, c, h, w = x.shape
        onehot = F.one_hot(attrs, self.n).float()
        if self.asa:
            p_img = torch.tanh(self.conv1(x))
            p_att = torch.tanh(self.mask_fc1(onehot))[:, :, None, None]
            alpha = softmax_hw(torch.tanh(self.conv2(p_att * p_img)))
            v = (x.reshape(b, c, h * w) * alpha[:, None, :]).sum(2)
        else:
            alpha = torch.full((b, h * w), 1.0 / (h * w))
            v = x.mean(dim=(2, 3))
        if self.aca:
            q = F.relu(self.mask_fc2(onehot))
            m = torch.sigmoid(self.fc2(F.relu(self.fc1(torch.cat([v, q], 1)))))
            v = v * m
        return l2n(self.feature_fc(v)), alpha.reshape(b, h, w)


class AsenV2Head(nn.Module):
    def __init__(self, c, hid, n):
        super().__init__()
        self.hid = hid
        self.attr_embedding = nn.Embedding(n, hid)
        self.attr_transform1 = nn.Linear(hid, hid)
        self.conv1 = nn.Conv2d(c, hid, 1)
        self.img_bn1 = nn.BatchNorm2d(hid)
        self.attr_transform2 = nn.Linear(hid, hid)
        self.fc1 = nn.Linear(c + hid, hid)
        self.fc2 = nn.Linear(hid, c)

    def forward(self, x, attrs):
        b, c, h, w = x.shape
        e = self.attr_embedding(attrs)
        p_img = torch.tanh(self.img_bn1(self.conv1(x)))
        a1 = torch.tanh(self.attr_transform1(e))
        alpha = softmax_hw((p_img * a1[:, :, None, None]).sum(1) / math.sqrt(self.hid))
        v = (x.reshape(b, c, h * w) * alpha[:, None, :]).sum(2)
        a2 = F.relu(self.attr_transform2(e))
        m = torch.sigmoid(self.fc2(F.relu(self.fc1(torch.cat([v, a2], 1)))))
        return l2n(v * m), alpha.reshape(b, h, w)


class SpatialAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, y):
        pooled = torch.cat([y.mean(1, keepdim=True), y.max(1, keepdim=True)[0]], 1)
        return torch.sigmoid(self.conv1(pooled))


def swish(t):
    return t * torch.sigmoid(t)


class AgManHead(nn.Module):
    def __init__(self, c, hid, n):
        super().__init__()
        self.hid = hid
        self.attr_embedding = nn.Embedding(n, hid)
        self.attr_transform1 = nn.Linear(hid, hid)
        self.conv1 = nn.Conv2d(c, hid, 1)
        self.img_bn1 = nn.BatchNorm2d(hid)
        self.sa = SpatialAttention()
        self.attr_transform2 = nn.Linear(hid, hid)
        self.fc1 = nn.Linear(2 * hid, hid)
        self.fc2 = nn.Linear(hid, hid)
        self.w = nn.Parameter(torch.ones(1))
        self.w1 = nn.Parameter(torch.ones(1))
        self.w2 = nn.Parameter(torch.ones(1))
        self.masks = nn.Embedding(n, hid)

    def forward(self, f, attrs):
        b, _, h, w = f.shape
        e = self.attr_embedding(attrs)
        y = self.conv1(self.w * f)
        p_img = torch.tanh(self.img_bn1(y))
        a1 = swish(self.attr_transform1(e))
        alpha = softmax_hw((p_img * a1[:, :, None, None]).sum(1) / math.sqrt(self.hid))
        y = y * self.w1 * alpha.reshape(b, 1, h, w)
        y = y * self.sa(y)
        v = y.sum(dim=(2, 3))
        a2 = swish(self.attr_transform2(e))
        m = torch.sigmoid(self.fc2(F.relu(self.fc1(torch.cat([v, a2], 1)))))
        v = v * self.w2 * m
        return l2n(v * F.relu(self.masks(attrs))), alpha.reshape(b, h, w)


class CsnHead(nn.Module):
    def __init__(self, c, dim, n, masks=True):
        super().__init__()
        self.embed_fc = nn.Linear(c, dim)
        self.has_masks = masks
        if masks:
            self.masks = nn.Embedding(n, dim)

    def forward(self, x, attrs):
        b, _, h, w = x.shape
        e = self.embed_fc(x.mean(dim=(2, 3)))
        if self.has_masks:
            e = e * F.relu(self.masks(attrs))
        return l2n(e), torch.full((b, h, w), 1.0 / (h * w))


class Model(nn.Module):
    """Parameter names as tailor saves them (the authors' names without `embeddingnet.`)."""

    def __init__(self, cfg):
        super().__init__()
        arch, bb, n, hid = cfg["arch"], cfg["backbone"], len(cfg["attributes"]), cfg["hidden_dim"]
        c = bb_widths(bb)[2] * 4
        trunk = ResNetTrunk(bb, n if arch == "ag-man" else None)
        self.trunk_name = "embeddingnet" if arch in ("csn", "triplet") else "backbonenet"
        setattr(self, self.trunk_name, trunk)
        if arch == "asen":
            self.head = AsenHead(c, hid, n)
        elif arch == "asen-no-asa":
            self.head = AsenHead(c, hid, n, asa=False)
        elif arch == "asen-no-aca":
            self.head = AsenHead(c, hid, n, aca=False)
        elif arch == "asen-v2":
            self.head = AsenV2Head(c, hid, n)
        elif arch == "ag-man":
            self.head = AgManHead(2 * c, hid, n)
        elif arch == "csn":
            self.head = CsnHead(c, cfg["embed_dim"], n)
        elif arch == "triplet":
            self.head = CsnHead(c, cfg["embed_dim"], n, masks=False)
        else:
            raise ValueError(arch)

    def forward(self, images, attrs):
        fmap, logits = getattr(self, self.trunk_name)(images)
        emb, att = self.head(fmap, attrs)
        return emb, att, logits

    def flat_state(self):
        # The head's parameters live at the top level in the authors' checkpoints.
        return {
            (k[len("head."):] if k.startswith("head.") else k): v.detach().clone().contiguous()
            for k, v in self.state_dict().items()
        }


def randomise(model, images):
    """Random weights with realistic batch-norm statistics: draw every parameter, then
    calibrate the running statistics on one batch (train mode, momentum 1)."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(2.0 / fan_in))
            elif name.split(".")[-1] in ("w", "w1", "w2"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.momentum = 1.0
        if hasattr(model.head, "masks"):
            model.head.masks.weight.copy_(0.9 + 0.7 * torch.randn(model.head.masks.weight.shape, generator=g))
        model.train()
        model(images, torch.zeros(images.shape[0], dtype=torch.long))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
                # A channel that ReLU left (nearly) constant on the calibration batch would
                # amplify by 1/sqrt(eps) at eval time; floor the variance.
                m.running_var.clamp_(min=1e-2)
    model.eval()


def config(arch, bb, n_attr, input_size, hidden):
    c = bb_widths(bb)[2] * 4
    embed = hidden if arch == "ag-man" else (c if bb["kind"] == "tiny" or arch not in ("csn", "triplet") else 1024)
    return {
        "arch": arch,
        "backbone": bb,
        "attributes": ["attr%d" % i for i in range(n_attr)],
        "values": [["v%d" % j for j in range(i + 2)] for i in range(n_attr)],
        "input_size": input_size,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "embed_dim": embed,
        "hidden_dim": hidden,
    }


def meta(cfg):
    return {"tailor.model_format": "1", "tailor.model_config": json.dumps(cfg)}


def expected_outputs(model, inputs, n_attr):
    out = {}
    with torch.no_grad():
        for key, images in inputs.items():
            for a in range(n_attr):
                attrs = torch.full((images.shape[0],), a, dtype=torch.long)
                emb, att, logits = model(images, attrs)
                out["%s.emb.%d" % (key, a)] = emb.contiguous()
                out["%s.att.%d" % (key, a)] = att.contiguous()
                if logits is not None:
                    out["%s.logits" % key] = logits.contiguous()
    return out


ARCHS = ["asen", "asen-v2", "ag-man", "csn", "triplet", "asen-no-asa", "asen-no-aca"]


def write_fixtures(root):
    out_dir = os.path.join(root, "parity")
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    n_attr = 3
    inputs = {
        "square": torch.randn(3, 3, 64, 64),
        "tall": torch.randn(2, 3, 80, 64),
    }
    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(out_dir, "inputs.safetensors"))
    for arch in ARCHS:
        cfg = config(arch, TINY_BACKBONE, n_attr, 64, 16)
        model = Model(cfg)
        randomise(model, torch.randn(8, 3, 64, 64))
        state = model.flat_state()
        tensors = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        if arch == "asen":
            # The authors' container: zip pickle, `embeddingnet.` prefix, unused extras.
            ckpt = {("embeddingnet." + k): v for k, v in state.items()}
            ckpt["embeddingnet.backbonenet.fc.weight"] = torch.randn(10, 64)
            ckpt["embeddingnet.backbonenet.fc.bias"] = torch.randn(10)
            torch.save({"epoch": 3, "state_dict": ckpt, "prec": 0.5},
                       os.path.join(out_dir, "asen_authors.pth.tar"))
        elif arch == "csn":
            # CSN's nesting: `embeddingnet.embeddingnet.` backbone, no tailor metadata.
            save_file({("embeddingnet." + k): v for k, v in tensors.items()},
                      os.path.join(out_dir, "csn_authors.safetensors"))
            with open(os.path.join(out_dir, "csn_authors.config.json"), "w") as f:
                json.dump(cfg, f)
        else:
            save_file(tensors, os.path.join(out_dir, "%s.safetensors" % arch), metadata=meta(cfg))
        if arch == "asen":
            with open(os.path.join(out_dir, "asen_authors.config.json"), "w") as f:
                json.dump(cfg, f)
        save_file(expected_outputs(model, inputs, n_attr),
                  os.path.join(out_dir, "%s.expected.safetensors" % arch))
        print("wrote", arch)
    write_preprocess_fixture(out_dir)


def write_preprocess_fixture(out_dir):
    from PIL import Image
    from torchvision import transforms

    rng = np.random.default_rng(5)
    tf = transforms.Compose([
        transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    out = {}
    for name, (w, h) in {"wide": (150, 97), "tall": (61, 93)}.items():
        # Smooth gradients plus noise: realistic content for a bilinear filter.
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255.0 / w, yy * 255.0 / h, (xx + yy) * 127.0 / (w + h)], -1)
        img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        path = os.path.join(out_dir, "pre_%s.png" % name)
        Image.fromarray(img).save(path)
        out[name] = tf(Image.open(path).convert("RGB")).contiguous()
    save_file(out, os.path.join(out_dir, "preprocess.expected.safetensors"))


def write_full(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    cfg = config("asen", RESNET50, 8, 224, 512)
    model = Model(cfg)
    randomise(model, torch.randn(4, 3, 224, 224))
    save_file({k: v for k, v in model.flat_state().items() if not k.endswith("num_batches_tracked")},
              os.path.join(out_dir, "asen_resnet50.safetensors"), metadata=meta(cfg))
    inputs = {"square": torch.randn(2, 3, 224, 224)}
    save_file(inputs, os.path.join(out_dir, "inputs.safetensors"))
    save_file(expected_outputs(model, inputs, 2), os.path.join(out_dir, "asen_resnet50.expected.safetensors"))
    print("wrote", out_dir)


if __name__ == "__main__":
    torch.set_num_threads(2)
    if len(sys.argv) >= 2 and sys.argv[1] == "fixtures":
        write_fixtures(sys.argv[2] if len(sys.argv) > 2 else "fixtures")
    elif len(sys.argv) == 3 and sys.argv[1] == "full":
        write_full(sys.argv[2])
    else:
        sys.exit(__doc__)
