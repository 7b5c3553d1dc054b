#!/usr/bin/env python3
"""Peer side of benches/index.rs: builds and queries hnswlib and faiss IndexHNSWFlat on
the data the Rust bench wrote (base.npy, queries.npy, gt.npy in --dir) and prints one JSON
object per system on stdout. Inner product on L2-normalised vectors, M=16, efC=200,
build with --threads threads, search one query per call on one thread."""
import argparse, json, os, sys, tempfile, time

import numpy as np


def recall(found, gt, k):
    return float(np.mean([len(set(f[:k]) & set(g[:k])) / k for f, g in zip(found, gt)]))


def sweep(search_one, queries, gt, k, efs, set_ef):
    out = []
    for ef in efs:
        set_ef(ef)
        t = time.perf_counter()
        found = [search_one(q) for q in queries]
        dt = time.perf_counter() - t
        out.append({"ef": ef, "recall": recall(found, gt, k), "qps": len(queries) / dt})
    return out


def run_hnswlib(base, queries, gt, args):
    import hnswlib
    n, dim = base.shape
    idx = hnswlib.Index(space="ip", dim=dim)
    t = time.perf_counter()
    idx.init_index(max_elements=n, M=args.m, ef_construction=args.ef_construction, random_seed=1)
    idx.set_num_threads(args.threads)
    idx.add_items(base, np.arange(n))
    build = time.perf_counter() - t
    path = os.path.join(args.work, "hnswlib.bin")
    idx.save_index(path)
    size = os.path.getsize(path)
    del idx
    t = time.perf_counter()
    idx = hnswlib.Index(space="ip", dim=dim)
    idx.load_index(path, max_elements=n)
    open_s = time.perf_counter() - t
    idx.set_num_threads(1)
    t = time.perf_counter()
    idx.set_ef(64)
    idx.knn_query(queries[:1], k=args.k)
    first = time.perf_counter() - t
    res = sweep(lambda q: idx.knn_query(q, k=args.k)[0][0], queries, gt, args.k, args.efs, idx.set_ef)
    return {"system": "hnswlib " + getattr(hnswlib, "__version__", ""), "build_s": build,
            "bytes": size, "open_s": open_s, "first_query_s": first, "sweep": res}


def run_faiss(base, queries, gt, args):
    import faiss
    n, dim = base.shape
    faiss.omp_set_num_threads(args.threads)
    idx = faiss.IndexHNSWFlat(dim, args.m, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = args.ef_construction
    t = time.perf_counter()
    idx.add(base)
    build = time.perf_counter() - t
    path = os.path.join(args.work, "faiss.index")
    faiss.write_index(idx, path)
    size = os.path.getsize(path)
    del idx
    t = time.perf_counter()
    idx = faiss.read_index(path)
    open_s = time.perf_counter() - t
    faiss.omp_set_num_threads(1)

    def set_ef(ef):
        idx.hnsw.efSearch = ef

    t = time.perf_counter()
    set_ef(64)
    idx.search(queries[:1], args.k)
    first = time.perf_counter() - t
    res = sweep(lambda q: idx.search(q[None, :], args.k)[1][0], queries, gt, args.k, args.efs, set_ef)
    return {"system": "faiss " + faiss.__version__ + " IndexHNSWFlat", "build_s": build,
            "bytes": size, "open_s": open_s, "first_query_s": first, "sweep": res}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--efs", default="10,16,20,24,32,40,48,64,80,96,128,160,200,256,320,400,512")
    p.add_argument("--systems", default="hnswlib,faiss")
    args = p.parse_args()
    args.efs = [int(x) for x in args.efs.split(",")]
    base = np.load(os.path.join(args.dir, "base.npy"))
    queries = np.load(os.path.join(args.dir, "queries.npy"))
    gt = np.load(os.path.join(args.dir, "gt.npy")).astype(np.int64)
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        args.work = work
        for name in args.systems.split(","):
            try:
                r = run_hnswlib(base, queries, gt, args) if name == "hnswlib" else run_faiss(base, queries, gt, args)
            except ImportError as e:
                r = {"system": name, "error": str(e)}
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    sys.exit(main())
