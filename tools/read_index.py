#!/usr/bin/env python3
"""Independent reader for tailor's on-disk vector index, written from
index-format.md alone (format versions 1 and 2). It deliberately shares no
code with the Rust implementation, so that disagreements expose gaps in the
document rather than copied bugs.

  read_index.py DIR                                   summary + full validation
  read_index.py DIR --exact ATTR ROW -k K             brute-force top-k
  read_index.py DIR --walk ATTR ROW -k K --ef EF      HNSW search over the stored graph
  read_index.py DIR --estimate ATTR ROW QROW          bit1/bit4: estimate, bound and exact score
                                                      of ROW for the query vec[QROW] (JSON)
"""
import argparse
import heapq
import json
import os
import struct
import sys
import zlib

import numpy as np

SUPPORTED_VERSIONS = (1, 2)  # INDEX_FORMAT_OLDEST_SUPPORTED_VERSION ..= INDEX_FORMAT_VERSION
HEADER = struct.Struct("<8sIIQQQQ16s")
ELEMENT_TYPES = {0: "f32", 1: "f16", 2: "int8", 3: "bit1", 4: "bit4"}
MASK64 = (1 << 64) - 1
NO_ENTRY = 0xFFFFFFFFFFFFFFFF
MANIFEST_LIMIT = 256 << 20


class FormatError(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise FormatError(msg)


def align_up(x, a):
    return (x + a - 1) // a * a


def row_page(version):
    # Version 2 page-aligns the row section so one 1024-d f32 row is one page.
    return 4096 if version >= 2 else 64


class BinFile:
    """A whole binary file held in memory, with its parsed common header.
    Sections are exposed as zero-copy numpy views; every view is bounds-checked
    against the exact length the header implies before it is taken."""

    def __init__(self, path, magic):
        self.path = path
        with open(path, "rb") as f:
            self.buf = f.read()
        name = os.path.basename(path)
        need(len(self.buf) >= 64, f"{name}: shorter than the 64-byte header")
        m, self.version, self.a, self.count, self.b, self.c, self.d, reserved = \
            HEADER.unpack_from(self.buf, 0)
        need(m == magic, f"{name}: magic {m!r}, expected {magic!r}")
        need(self.version in SUPPORTED_VERSIONS,
             f"{name}: version {self.version} unsupported (rebuild the index)")
        need(reserved == bytes(16), f"{name}: reserved header bytes are not zero")
        self.name = name

    def expect_len(self, n):
        # Exact, not minimum: a longer file means the header and body disagree.
        need(len(self.buf) == n, f"{self.name}: length {len(self.buf)}, header implies {n}")

    def view(self, offset, dtype, count):
        dtype = np.dtype(dtype).newbyteorder("<")
        need(offset % dtype.itemsize == 0, f"{self.name}: misaligned section at {offset}")
        need(offset + count * dtype.itemsize <= len(self.buf), f"{self.name}: section past end")
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=offset)

    def zeros(self, start, end, what):
        need(not any(self.buf[start:end]), f"{self.name}: non-zero {what} at {start}..{end}")


def read_vectors(path, n, dim):
    """Returns (kind, rows[N, D] as float32/float16/int8, scales or None)."""
    f = BinFile(path, b"TAILRVEC")
    need(f.a in ELEMENT_TYPES, f"{f.name}: unknown element type {f.a}")
    need(f.count == n, f"{f.name}: {f.count} rows, manifest says {n}")
    need(f.b == dim and 1 <= dim <= 0xFFFFFFFF, f"{f.name}: dim {f.b}, manifest says {dim}")
    kind, page = ELEMENT_TYPES[f.a], row_page(f.version)
    need((kind in ("bit1", "bit4") or f.c == 0) and f.d == 0, f"{f.name}: header c/d not zero")
    scales = None
    if kind == "bit1":
        # "1-bit codes (bit1)": N (dot, residual) f32 pairs, padding, N codes of W words.
        words = bit1_padded(dim) // 64
        corr = f.view(64, np.float32, 2 * n).reshape(n, 2)
        start = align_up(64 + 8 * n, page)
        f.zeros(64 + 8 * n, start, "padding")
        f.expect_len(start + 8 * words * n)
        codes = f.view(start, np.uint64, n * words).reshape(n, words)
        return kind, codes, Bit1(dim, f.c, corr), f.version
    if kind == "bit4":
        # "4-bit codes (bit4)": N (lo, step, err, cnorm) f32 quadruples, padding, N codes
        # of S/2 bytes.
        b4 = Bit4(dim, f.c, f.view(64, np.float32, 4 * n).reshape(n, 4))
        start = align_up(64 + 16 * n, page)
        f.zeros(64 + 16 * n, start, "padding")
        f.expect_len(start + b4.s // 2 * n)
        codes = f.view(start, np.uint8, n * (b4.s // 2)).reshape(n, b4.s // 2)
        return kind, codes, b4, f.version
    if kind == "int8":
        scales = f.view(64, np.float32, n)
        need(np.all(np.isfinite(scales)) and np.all(scales > 0), f"{f.name}: bad scale")
        start = align_up(64 + 4 * n, page)
        f.zeros(64 + 4 * n, start, "padding")
        dtype = np.int8
    else:
        start = align_up(64, page)
        f.zeros(64, start, "padding")
        dtype = np.float32 if kind == "f32" else np.float16
    size = np.dtype(dtype).itemsize
    f.expect_len(start + size * n * dim)
    rows = f.view(start, dtype, n * dim).reshape(n, dim)
    return kind, rows, scales, f.version


def bit1_padded(dim):
    q = 1
    while q < dim:
        q *= 2
    return max(64, q)


def splitmix64(seed, g):
    z = (seed + (g + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


class Bit1:
    """The rotation, corrections and estimate of a bit1 file, from index-format.md."""

    def __init__(self, dim, seed, corr):
        self.dim, self.seed, self.corr = dim, seed, corr
        self.q = bit1_padded(dim)
        w = self.q // 64
        bits = np.array([[(splitmix64(seed, r * w + i // 64) >> (i % 64)) & 1
                          for i in range(self.q)] for r in range(3)], dtype=np.int8)
        self.signs = 1.0 - 2.0 * bits  # -1 where the bit is set

    def rotate(self, x):
        v = np.zeros(self.q)
        v[: self.dim] = x
        for r in range(3):
            v = v * self.signs[r]
            h = 1
            while h < self.q:
                blocks = v.reshape(-1, 2, h)
                v = np.concatenate([blocks[:, 0] + blocks[:, 1], blocks[:, 0] - blocks[:, 1]], axis=1).reshape(-1)
                h *= 2
            v = v / np.sqrt(self.q)
        return v

    def encode(self, x):
        o = self.rotate(np.asarray(x, dtype=np.float64))
        bits = (o > 0).astype(np.uint64)
        words = (bits.reshape(-1, 64) << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
        dot = np.abs(o).sum() / np.sqrt(self.q)
        residual = np.sqrt(max(0.0, float(o @ o) - dot * dot))
        return words, dot, residual, o

    def query(self, q):
        y = self.rotate(np.asarray(q, dtype=np.float64) / np.linalg.norm(q))
        lo = y.min()
        delta = (y.max() - lo) / 255.0
        u = np.zeros(self.q, dtype=np.int64) if delta == 0 else np.rint((y - lo) / delta).astype(np.int64)
        return dict(y=y, lo=lo, delta=delta, u=u, sum=y.sum(), e=np.sqrt(self.q) * delta)

    def estimate(self, qd, code):
        """(estimate, upper bound) of <x, q> for a stored code and its corrections."""
        bits = ((code[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).reshape(-1).astype(bool)
        pc = int(bits.sum())
        ws = int(qd["u"][bits].sum())  # = sum_j 2^j popcount(code AND plane_j)
        t = (2.0 * (qd["lo"] * pc + qd["delta"] * ws) - qd["sum"]) / np.sqrt(self.q)
        return t, pc

    def score(self, qd, codes, row):
        dot, residual = (float(v) for v in self.corr[row])
        t, _ = self.estimate(qd, codes[row])
        est = t / dot
        e = qd["e"]
        m = max(0.0, abs(t) - e)
        upper = dot * (t + e) + residual * np.sqrt(max(0.0, 1.0 - m * m)) + 1e-4
        return est, upper


class Bit4:
    """The terms, codes and estimate of a bit4 file, from index-format.md (the rotation
    is bit1's)."""

    def __init__(self, dim, seed, terms):
        self.rot = Bit1(dim, seed, None)
        self.terms = terms
        self.q = self.rot.q
        self.s = max(128, self.q)
        # Coordinate i of a row sits in byte (i // 128) * 64 + i % 64, high nibble iff
        # i % 128 >= 64.
        i = np.arange(self.s)
        self.byte = (i // 128) * 64 + i % 64
        self.high = (i % 128) >= 64

    def unpack(self, code):
        b = code[self.byte].astype(np.int64)
        return np.where(self.high, b >> 4, b & 15)

    def encode(self, x):
        o = self.rot.rotate(np.asarray(x, dtype=np.float64))
        mn, mx = o.min(), o.max()
        mid, half = (mn + mx) / 2, (mx - mn) / 2
        best = None
        for f in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5):
            lo, step = mid - f * half, 2 * f * half / 15
            if step <= 0:
                best = (0.0, mid, 0.0)
                break
            c = np.clip(np.floor((o - lo) / step + 0.5), 0, 15)
            e2 = float(((o - (lo + step * c)) ** 2).sum())
            if best is None or e2 < best[0]:
                best = (e2, lo, step)
        _, lo, step = best
        c = np.zeros(self.q) if step <= 0 else np.clip(np.floor((o - lo) / step + 0.5), 0, 15)
        err = np.sqrt(((o - (lo + step * c)) ** 2).sum())
        return c.astype(np.int64), lo, step, err, np.sqrt((c * c).sum()), o

    def query(self, q):
        z = self.rot.rotate(np.asarray(q, dtype=np.float64) / np.linalg.norm(q))
        m = np.abs(z).max()
        delta = m / 127 if m > 0 else 1.0
        v = np.clip(np.sign(z) * np.floor(np.abs(z) / delta + 0.5), -127, 127)
        vs = np.zeros(self.s)
        vs[: self.q] = v
        return dict(v=vs.astype(np.int64), delta=delta, sum=z.sum(), norm=np.linalg.norm(z),
                    err=np.linalg.norm(z - delta * v))

    def score(self, qd, codes, row):
        lo, step, err, cnorm = (float(t) for t in self.terms[row])
        est = lo * qd["sum"] + step * qd["delta"] * float(self.unpack(codes[row]) @ qd["v"])
        upper = est + (err * qd["norm"] + step * cnorm * qd["err"]) * (1 + 1e-5) + 1e-4
        return est, upper


class Graph:
    def __init__(self, path, n):
        f = BinFile(path, b"TAILRGRF")
        self.m0, self.m, self.entry, self.upper = f.a, f.b, f.c, f.d
        need(f.count == n, f"{f.name}: {f.count} nodes, manifest says {n}")
        need(1 <= self.m0 <= 4096 and 1 <= self.m <= 4096, f"{f.name}: M0/M out of range")
        need((self.entry == NO_ENTRY) == (n == 0), f"{f.name}: entry {self.entry} vs N={n}")
        # Check sizes in Python ints before any allocation so a hostile U/M can't overflow.
        l0, lv = 64, 64 + 4 * n * (self.m0 + 1)
        us = align_up(lv + n, 4)
        ub = us + 4 * n
        f.expect_len(ub + 4 * self.upper * (self.m + 1))
        self.level0 = f.view(l0, np.uint32, n * (self.m0 + 1)).reshape(n, self.m0 + 1)
        self.levels = f.view(lv, np.uint8, n)
        f.zeros(lv + n, us, "levels padding")
        self.starts = f.view(us, np.uint32, n)
        self.blocks = f.view(ub, np.uint32, self.upper * (self.m + 1)).reshape(self.upper, self.m + 1)
        self.name, self.n = f.name, n
        self.validate()

    def validate(self):
        n, name = self.n, self.name
        lv = self.levels.astype(np.int64)
        need(int(lv.sum()) == self.upper, f"{name}: U={self.upper} but levels sum to {lv.sum()}")
        if n:
            need(self.entry < n, f"{name}: entry {self.entry} >= N")
            need(lv[self.entry] == lv.max(), f"{name}: entry is not on the top level")
        self._check_lists(self.level0, self.m0, np.zeros(n, np.int64), "level 0")
        # Upper block indices must stay inside U and, since U = sum of levels, each
        # block must belong to exactly one (node, level); a shared block would
        # silently merge two nodes' lists. Each level's lists may only name nodes
        # that exist on that level.
        has = lv >= 1
        starts = self.starts.astype(np.int64)
        need(np.all(starts[has] + lv[has] - 1 < self.upper), f"{name}: upper block index >= U")
        claimed = np.zeros(self.upper, np.int64)
        for level in range(1, int(lv.max(initial=0)) + 1):
            idx = starts[lv >= level] + level - 1
            np.add.at(claimed, idx, 1)
            self._check_lists(self.blocks[idx], self.m, lv, f"level {level}", level)
        need(np.all(claimed == 1), f"{name}: upper blocks shared or unclaimed")

    def _check_lists(self, blocks, cap, lv, where, level=0):
        if len(blocks) == 0:
            return
        counts = blocks[:, 0]
        need(np.all(counts <= cap), f"{self.name}: {where}: list longer than {cap}")
        slot = np.arange(1, cap + 1)
        used = slot[None, :] <= counts[:, None]
        nbrs = blocks[:, 1:]
        need(np.all(nbrs[used] < self.n), f"{self.name}: {where}: neighbour id >= N")
        need(not np.any(nbrs[~used]), f"{self.name}: {where}: unused slots not zero")
        if level:
            need(np.all(lv[nbrs[used]] >= level), f"{self.name}: {where}: neighbour below level")

    def neighbours(self, node, level):
        if level == 0:
            block = self.level0[node]
        else:
            block = self.blocks[int(self.starts[node]) + level - 1]
        return block[1:1 + int(block[0])]


def read_ids(path, n):
    f = BinFile(path, b"TAILRIDS")
    need(f.count == n and n < 2**32, f"{f.name}: {f.count} items, manifest says {n}")
    need(f.a == 0 and f.c == 0 and f.d == 0, f"{f.name}: header a/c/d not zero")
    total = f.b
    s = 64 + 8 * (n + 1)
    t = align_up(s + 4 * n, 8)
    f.expect_len(t + total)
    off = f.view(64, np.uint64, n + 1).astype(np.int64)
    need(off[0] == 0 and off[-1] == total and np.all(np.diff(off) > 0),
         f"{f.name}: offsets not 0..B strictly increasing (empty id?)")
    f.zeros(s + 4 * n, t, "padding")
    raw = f.buf[t:t + total]
    ids = [raw[off[i]:off[i + 1]] for i in range(n)]
    order = f.view(s, np.uint32, n)
    need(np.array_equal(np.sort(order), np.arange(n)), f"{f.name}: sorted rows not a permutation")
    # Strictly increasing in sorted order proves both the sort and uniqueness.
    need(all(ids[order[i]] < ids[order[i + 1]] for i in range(n - 1)),
         f"{f.name}: ids not unique or not sorted bytewise")
    out = [x.decode("utf-8") for x in ids]
    need(not any(("\n" in x or "\r" in x) for x in out), f"{f.name}: id with a line break")
    return out


def read_labels(path, n, schema):
    f = BinFile(path, b"TAILRLBL")
    attrs = schema["attributes"]
    need(f.a == len(attrs) and f.count == n, f"{f.name}: header disagrees with manifest")
    f.expect_len(64 + 2 * n * f.a)
    v = f.view(64, np.uint16, n * f.a).reshape(n, f.a)
    for j, attr in enumerate(attrs):
        col = v[:, j]
        need(np.all((col < len(attr["values"])) | (col == 0xFFFF)), f"{f.name}: bad label value")
    return v


def read_tombstones(path, n, removed):
    f = BinFile(path, b"TAILRTMB")
    words = (n + 63) // 64
    need(f.count == n, f"{f.name}: {f.count} items, manifest says {n}")
    f.expect_len(64 + 8 * words)
    bits = np.unpackbits(f.view(64, np.uint64, words).view(np.uint8), bitorder="little")
    need(not bits[n:].any(), f"{f.name}: bits set past row N")
    dead = bits[:n].astype(bool)
    need(f.b == removed == int(dead.sum()), f"{f.name}: {dead.sum()} bits, b={f.b}, manifest {removed}")
    return dead


class Index:
    def __init__(self, path):
        self.dir = path
        mpath = os.path.join(path, "manifest.json")
        need(os.path.getsize(mpath) <= MANIFEST_LIMIT, "manifest.json larger than 256 MiB")
        with open(mpath, "rb") as fh:
            m = json.loads(fh.read().decode("utf-8"))
        need(m.get("format") == "tailor-index", "not a tailor index")
        need(m.get("format_version") in SUPPORTED_VERSIONS,
             f"format_version {m.get('format_version')} unsupported (rebuild the index)")
        need(m.get("metric") == "cosine", f"unknown metric {m.get('metric')}")
        self.m, self.n, self.removed = m, m["items"], m["removed"]
        self.files = {e["name"]: e for e in m["files"]}
        named = [m["ids"], m["labels"], m["tombstones"]]
        tier = m["params"].get("rescore", "none")
        need(tier == "none" or (tier == "int8" and m["params"]["compact"] in ("bit1", "bit4")),
             f"params.rescore {tier!r} with params.compact {m['params']['compact']!r}")
        for a in m["attributes"]:
            named += [a["vectors"], a["compact"], a.get("rescore"), a["graph"]]
            need(("rescore" in a) == (tier != "none"),
                 f"attribute {a['name']!r}: a re-scoring tier iff params.rescore is int8")
        for name in filter(None, named):
            # Names are bare file names; refuse anything that could escape DIR.
            need(os.path.basename(name) == name and name not in (".", ".."), f"bad name {name!r}")
            need(name in self.files, f"{name} is not listed in manifest files")
        need((m["labels"] is None) == (m["schema"] is None), "labels present iff schema")
        need(self.removed == 0 or m["tombstones"], "removed > 0 without a tombstone file")

    def path(self, name):
        return os.path.join(self.dir, name)

    def checksums(self):
        """{name: None if ok else reason}. Reads each file once; crc32 is zlib's."""
        out = {}
        for name, e in self.files.items():
            p = self.path(name)
            if not os.path.exists(p):
                out[name] = "missing"
                continue
            crc, size = 0, 0
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    crc, size = zlib.crc32(chunk, crc), size + len(chunk)
            if size != e["len"]:
                out[name] = f"length {size} != {e['len']}"
            elif crc != e["crc32"]:
                out[name] = f"crc32 {crc} != {e['crc32']}"
            else:
                out[name] = None
        return out

    def load(self):
        m, n = self.m, self.n
        self.ids = read_ids(self.path(m["ids"]), n)
        self.labels = read_labels(self.path(m["labels"]), n, m["schema"]) if m["labels"] else None
        self.dead = (read_tombstones(self.path(m["tombstones"]), n, self.removed)
                     if m["tombstones"] else np.zeros(n, bool))
        self.attrs = {}
        for a in m["attributes"]:
            kind, vec, _, ver = read_vectors(self.path(a["vectors"]), n, a["dim"])
            need(kind == "f32", f"{a['vectors']}: vectors file is {kind}, must be f32")
            compact = None
            if a["compact"]:
                ckind, codes, scales, cver = read_vectors(self.path(a["compact"]), n, a["dim"])
                need(ckind in ("f16", "int8", "bit1", "bit4"), f"{a['compact']}: compact copy is {ckind}")
                if ckind == "bit1":
                    check_bit1(a, vec, codes, scales)
                if ckind == "bit4":
                    check_bit4(a, vec, codes, scales)
                if ckind == "int8":
                    check_int8(a, a["compact"], vec, codes, scales)
                need(ckind == m["params"]["compact"], "compact kind disagrees with params")
                compact = (ckind, codes, scales, cver)
            if a.get("rescore"):
                # The re-scoring tier: an int8 copy that only decides which f32 rows tailor
                # reads; the results do not depend on it, so this reader checks it and
                # otherwise leaves it alone.
                tkind, tcodes, tscales, _ = read_vectors(self.path(a["rescore"]), n, a["dim"])
                need(tkind == "int8", f"{a['rescore']}: re-scoring tier is {tkind}, must be int8")
                check_int8(a, a["rescore"], vec, tcodes, tscales)
            graph = Graph(self.path(a["graph"]), n)
            self.attrs[a["name"]] = dict(dim=a["dim"], vec=vec, vec_version=ver,
                                         compact=compact, graph=graph)
        return self

    def exact(self, attr, q, k, skip):
        s = self.attrs[attr]["vec"] @ q
        s[self.dead] = -np.inf
        if skip is not None:
            s[skip] = -np.inf
        # Stable sort on -score keeps equal scores in row order: deterministic ties.
        top = np.argsort(-s, kind="stable")[:k]
        return [(int(r), float(s[r])) for r in top if s[r] != -np.inf]

    def walk(self, attr, q, k, ef, skip, use_compact=True):
        a = self.attrs[attr]
        g = a["graph"]
        if g.entry == NO_ENTRY:
            return []
        # Approximate scores steer the walk; the exact f32 rows only re-score the
        # final beam, as the document says ("compact only guides the graph walk").
        if use_compact and a["compact"]:
            kind, codes, scales, _ = a["compact"]
            if kind in ("bit1", "bit4"):
                qd = scales.query(q)
                score = lambda r: scales.score(qd, codes, r)[0]
            elif kind == "int8":
                score = lambda r: float(scales[r]) * float(codes[r].astype(np.float32) @ q)
            else:
                score = lambda r: float(codes[r].astype(np.float32) @ q)
        else:
            score = lambda r: float(a["vec"][r] @ q)

        cur = int(g.entry)
        cur_s = score(cur)
        for level in range(int(g.levels[cur]), 0, -1):
            improved = True
            while improved:
                improved = False
                for nb in g.neighbours(cur, level):
                    s = score(int(nb))
                    if s > cur_s:
                        cur, cur_s, improved = int(nb), s, True

        # Best-first on level 0. Removed rows (and the query item) stay walkable but
        # are kept out of the result beam, so they never take one of the ef slots.
        ef = max(ef, k)
        seen = {cur}
        cand = [(-cur_s, cur)]
        beam = []  # min-heap of (score, row): beam[0] is the worst kept
        keep = lambda r: not self.dead[r] and r != skip
        if keep(cur):
            beam.append((cur_s, cur))
        while cand:
            neg, node = heapq.heappop(cand)
            if len(beam) >= ef and -neg < beam[0][0]:
                break
            for nb in g.neighbours(node, 0):
                nb = int(nb)
                if nb in seen:
                    continue
                seen.add(nb)
                s = score(nb)
                if len(beam) < ef or s > beam[0][0]:
                    heapq.heappush(cand, (-s, nb))
                    if keep(nb):
                        heapq.heappush(beam, (s, nb))
                        if len(beam) > ef:
                            heapq.heappop(beam)
        rows = np.array(sorted(r for _, r in beam), dtype=np.int64)
        if len(rows) == 0:
            return []
        exact = a["vec"][rows] @ q
        order = np.lexsort((rows, -exact))[:k]
        return [(int(rows[i]), float(exact[i])) for i in order]


def check_bit1(a, vec, codes, b):
    """Every row's code and corrections, recomputed from its f32 row, match the file
    (verify check (d))."""
    lo = 1.0 / np.sqrt(b.q) - 1e-4
    for row in range(vec.shape[0]):
        words, dot, residual, o = b.encode(vec[row])
        sd, sr = (float(v) for v in b.corr[row])
        need(lo <= sd <= 1.0001 and 0.0 <= sr <= 1.0001,
             f"{a['compact']}: row {row} corrections out of range")
        diff = words ^ codes[row]
        if diff.any():
            flipped = ((diff[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).reshape(-1).astype(bool)
            need(np.all(np.abs(o[flipped]) <= 1e-5),
                 f"attribute {a['name']!r}: {a['compact']} row {row} code disagrees with the f32 rows")
        need(abs(sd - dot) <= 1e-5 and abs(sr - residual) <= 1e-5,
             f"attribute {a['name']!r}: {a['compact']} row {row} corrections disagree with the f32 rows")


def check_int8(a, name, vec, codes, scales):
    """Every int8 row's scale and codes, recomputed from its f32 row in f32, match the file
    (verify check (d)): scales within 1e-6 relative, codes exact except one off within
    1e-3 of a rounding boundary."""
    want = (np.abs(vec).max(axis=1) / np.float32(127)).astype(np.float32)
    want[want == 0] = 1
    bad = np.nonzero(np.abs(scales - want) > 1e-6 * np.abs(want))[0]
    need(len(bad) == 0, f"attribute {a['name']!r}: {name} row {bad[0] if len(bad) else 0} "
         "scale disagrees with the f32 rows")
    at = vec / want[:, None]
    # numpy rounds half to even; tailor (Rust's round) half away from zero: ties are
    # boundaries either way.
    code = np.clip(np.round(at), -127, 127).astype(np.int64)
    off = code != codes.astype(np.int64)
    edge = (np.abs(at - np.floor(at) - 0.5) < 1e-3) & (np.abs(code - codes.astype(np.int64)) == 1)
    rows = np.nonzero((off & ~edge).any(axis=1))[0]
    need(len(rows) == 0, f"attribute {a['name']!r}: {name} row {rows[0] if len(rows) else 0} "
         "code disagrees with the f32 rows")


def check_bit4(a, vec, codes, b):
    """Every row's terms and codes, recomputed from its f32 row, match the file (verify
    check (d)); this reader rotates in f64, so it allows codes one step off within 1e-2
    steps of a rounding boundary and terms within 1e-4."""
    t = b.terms
    need(np.all(np.isfinite(t)) and np.all(t[:, 1] >= 0) and np.all(t[:, 3] >= 0)
         and np.all((t[:, 2] >= 0) & (t[:, 2] <= 1.0001)), f"{a['compact']}: bit4 terms out of range")
    for row in range(vec.shape[0]):
        c, lo, step, err, cnorm, o = b.encode(vec[row])
        want = np.zeros(b.s, dtype=np.int64)
        want[: b.q] = c
        got = b.unpack(codes[row])
        off = np.nonzero(got != want)[0]
        if len(off):
            at = np.zeros(b.s)
            if step > 0:
                at[: b.q] = (o - lo) / step
            edge = np.abs(at - np.floor(at) - 0.5) < 1e-2
            need(np.all(edge[off] & (np.abs(got[off] - want[off]) == 1)),
                 f"attribute {a['name']!r}: {a['compact']} row {row} code disagrees with the f32 rows")
        for s, w in zip(t[row], (lo, step, err, cnorm)):
            need(abs(float(s) - w) <= 1e-4 * max(1.0, abs(w)),
                 f"attribute {a['name']!r}: {a['compact']} row {row} terms disagree with the f32 rows")


def summary(ix, crcs):
    m = ix.m
    print(f"index {ix.dir}: format_version {m['format_version']}, generation {m['generation']}")
    print(f"items {ix.n} (removed {ix.removed}), metric {m['metric']}, params {m['params']}")
    if ix.labels is not None:
        print(f"labels: {[a['name'] for a in m['schema']['attributes']]}")
    for name, a in ix.attrs.items():
        g = a["graph"]
        comp = a["compact"]
        ctext = f"{comp[0]} (v{comp[3]})" if comp else "none"
        tier = ix.m["params"].get("rescore", "none")
        print(f"attribute {name}: dim {a['dim']}, f32 v{a['vec_version']}, compact {ctext}, "
              f"re-scoring tier {tier}")
        deg = g.level0[:, 0].mean() if ix.n else 0.0
        top = int(g.levels[g.entry]) if ix.n else -1
        print(f"  graph: M0 {g.m0}, M {g.m}, entry {g.entry if ix.n else None}, "
              f"top level {top}, upper blocks {g.upper}, mean level-0 degree {deg:.2f}")
    bad = {k: v for k, v in crcs.items() if v}
    print(f"checksums: {'ok' if not bad else 'FAILED'} ({len(crcs)} files)")
    for k, v in bad.items():
        print(f"  {k}: {v}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--exact", nargs=2, metavar=("ATTR", "ROW"))
    mode.add_argument("--walk", nargs=2, metavar=("ATTR", "ROW"))
    mode.add_argument("--estimate", nargs=3, metavar=("ATTR", "ROW", "QROW"))
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--ef", type=int, default=64)
    p.add_argument("--no-compact", action="store_true", help="walk on the f32 rows")
    p.add_argument("--include-self", action="store_true")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    args = p.parse_args()
    try:
        ix = Index(args.dir)
        crcs = ix.checksums()
        if any(crcs.values()):
            # Contents of a file failing its checksum can't be trusted enough to parse.
            print("checksums: FAILED", file=sys.stderr)
            for k, v in crcs.items():
                if v:
                    print(f"  {k}: {v}", file=sys.stderr)
            return 1
        ix.load()
        if not (args.exact or args.walk or args.estimate):
            summary(ix, crcs)
            return 0
        if args.estimate:
            attr, row, qrow = args.estimate[0], int(args.estimate[1]), int(args.estimate[2])
            need(attr in ix.attrs, f"no attribute {attr!r}")
            a = ix.attrs[attr]
            need(a["compact"] and a["compact"][0] in ("bit1", "bit4"), f"{attr}: no bit1 or bit4 copy")
            need(0 <= row < ix.n and 0 <= qrow < ix.n, "row out of range")
            _, codes, b, _ = a["compact"]
            q = np.asarray(a["vec"][qrow], dtype=np.float64)
            est, upper = b.score(b.query(q), codes, row)
            exact = float(np.asarray(a["vec"][row], dtype=np.float64) @ q)
            print(json.dumps({"row": row, "query_row": qrow, "estimate": est,
                              "upper": float(upper), "exact": exact}))
            return 0
        attr, row = args.exact or args.walk
        need(attr in ix.attrs, f"no attribute {attr!r}")
        row = int(row)
        need(0 <= row < ix.n, f"row {row} out of range")
        q = np.array(ix.attrs[attr]["vec"][row], dtype=np.float32)
        skip = None if args.include_self else row
        if args.exact:
            res = ix.exact(attr, q, args.k, skip)
        else:
            res = ix.walk(attr, q, args.k, args.ef, skip, not args.no_compact)
        if args.json:
            print(json.dumps([{"row": r, "id": ix.ids[r], "score": s} for r, s in res],
                             ensure_ascii=False))
        else:
            for r, s in res:
                print(f"{r}\t{ix.ids[r]}\t{s:.6f}")
        return 0
    except KeyError as e:
        print(f"error: manifest key or attribute {e} missing", file=sys.stderr)
        return 2
    except (FormatError, TypeError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
