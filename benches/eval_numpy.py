"""Vectorised numpy MAP and sgemm timing on the data that `benches/eval.rs` writes.

Usage: python eval_numpy.py DATA_DIR  (prints one JSON object on stdout)

DATA_DIR holds, per attribute NAME listed in attributes.txt: NAME.npy (rows x dim,
candidates first, then queries), NAME.labels.npy (one value per row) and the counts in
sizes.txt (`candidates queries`). MAP follows the ASEN metric: rank every candidate by
inner product (argsort of -scores), gather relevance, cumulative sums.
"""
import json
import os
import sys
import time

import numpy as np


def main():
    data = sys.argv[1]
    names = open(os.path.join(data, "attributes.txt")).read().split()
    n_cand, n_query = map(int, open(os.path.join(data, "sizes.txt")).read().split())
    attrs = []
    for name in names:
        m = np.load(os.path.join(data, name + ".npy"))
        labels = np.load(os.path.join(data, name + ".labels.npy")).reshape(-1).astype(np.int64)
        attrs.append((name, m[:n_cand], m[n_cand:n_cand + n_query], labels[:n_cand], labels[n_cand:n_cand + n_query]))

    def products():
        for _, c, q, _, _ in attrs:
            s = q @ c.T
        return s

    def vectorised_map():
        out = {}
        for name, c, q, cl, ql in attrs:
            s = q @ c.T
            order = np.argsort(-s, axis=1)
            rel = cl[order] == ql[:, None]
            hits = np.cumsum(rel, axis=1)
            prec = hits / np.arange(1, s.shape[1] + 1)
            n_rel = rel.sum(axis=1)
            ap = np.where(n_rel > 0, (prec * rel).sum(axis=1) / np.maximum(n_rel, 1), 0.0)
            out[name] = float(ap.mean())
        return out

    flops = sum(2.0 * q.shape[0] * c.shape[0] * c.shape[1] for _, c, q, _, _ in attrs)
    products()  # warm-up (page in, thread pool)
    t_prod = min(timed(products) for _ in range(3))
    maps = vectorised_map()
    t_map = min(timed(vectorised_map) for _ in range(2))
    print(json.dumps({
        "numpy": np.__version__,
        "threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "products_s": t_prod,
        "sgemm_gflops": flops / t_prod / 1e9,
        "map_s": t_map,
        "map": maps,
    }))


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
