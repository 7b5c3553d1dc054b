#!/usr/bin/env python3
"""Writes fixtures/parity/asen_authors_legacy.pth.tar: the authors' ASEN test checkpoint
(fixtures/parity/asen_authors.pth.tar, zip format) saved again in PyTorch's legacy
(pre-zip, PyTorch <= 1.5) format, as ASEN's and AG-MAN's published models were.

    python3 -m venv .venv-fixtures && .venv-fixtures/bin/pip install torch
    .venv-fixtures/bin/python tools/make_legacy_checkpoint.py

Same values as the zip file, with two layouts the reader must honour:
- a weight stored transposed (non-contiguous: strides (1, rows));
- two parameters sharing one storage (the second at a non-zero storage offset).
The Rust test (tests/model_parity.rs) needs no Python: it imports this file and
compares with the zip checkpoint's import.
"""

import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
PARITY = os.path.join(HERE, "..", "fixtures", "parity")


def main():
    ck = torch.load(os.path.join(PARITY, "asen_authors.pth.tar"), map_location="cpu")
    sd = ck["state_dict"]
    names = list(sd.keys())
    # A 2-D float weight made non-contiguous with the same values.
    two_d = next(n for n in names if sd[n].dim() == 2 and sd[n].dtype == torch.float32
                 and sd[n].shape[0] != sd[n].shape[1])
    sd[two_d] = sd[two_d].t().contiguous().t()
    assert not sd[two_d].is_contiguous()
    # Two 1-D float tensors of one length put in one storage.
    ones = [n for n in names if sd[n].dim() == 1 and sd[n].dtype == torch.float32]
    pair = None
    for i, a in enumerate(ones):
        for b in ones[i + 1:]:
            if sd[a].numel() == sd[b].numel():
                pair = (a, b)
                break
        if pair:
            break
    a, b = pair
    n = sd[a].numel()
    buf = torch.cat([sd[a], sd[b]])
    sd[a], sd[b] = buf[:n], buf[n:]
    assert sd[a].untyped_storage().data_ptr() == sd[b].untyped_storage().data_ptr()
    assert sd[b].storage_offset() == n
    print(f"non-contiguous: {two_d}; shared storage: {a}, {b}")
    out = os.path.join(PARITY, "asen_authors_legacy.pth.tar")
    torch.save(ck, out, _use_new_zipfile_serialization=False)
    with open(out, "rb") as f:
        assert f.read(2) == b"\x80\x02", "not the legacy pickle format"


if __name__ == "__main__":
    main()
