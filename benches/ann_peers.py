#!/usr/bin/env python3
"""Peer side of benches/index.rs: builds (or reloads from the bench's cache) and queries
hnswlib, faiss IndexHNSWFlat and usearch (f32 and i8) on the data the Rust bench wrote
(base.npy, memory-mapped, never copied whole; queries.npy and gt.npy in --data) and
prints one JSON object per line on stdout: {"info": ...} lines (versions and the SIMD
kernels each library dispatched to), then one object per system. Inner product on
L2-normalised vectors, M=16, efC=200, build with --threads threads, search one query
per call on one thread; faiss also searches all queries in one call on --threads threads
("batch"). Built indexes are kept in --work with their build time (a JSON beside each)
so reruns only query; --rebuild builds again.

With --serve the indexes stay loaded after the sweeps: the script prints {"serving":
[names]} and then answers one JSON request per line on stdin, {"system": name, "ef": ef},
with one timed pass of all queries at that ef, {"pass": name, "ef", "recall", "qps",
"cpu_qps"}, until stdin closes. The Rust bench uses it to alternate tailor's passes with
the peers' within seconds of each other, so the drift of a shared machine hits both.

Timings: open_s is a load with the index file still in the page cache; open_cold_s a load
after posix_fadvise(DONTNEED) dropped it (these peers read the whole file into memory on
load, so that is their cold start). mem_bytes is the growth of this process's resident
memory from before the load to after the sweep. Besides wall-clock q/s, cpu_qps counts
queries per CPU-second of the searching thread (of the process for the batch search),
the steadier figure on a machine shared with other jobs; build_cpu_s likewise."""
import argparse, json, os, sys, time

import numpy as np


def version(dist):
    from importlib.metadata import PackageNotFoundError, version as v
    try:
        return v(dist)
    except PackageNotFoundError:
        return "?"


# name -> (set_ef, search_one) of each loaded index, kept only with --serve.
SERVABLE = {}


def emit(obj):
    print(json.dumps(obj), flush=True)


def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def recall(found, gt, k):
    return float(np.mean([len(set(np.asarray(f)[:k].tolist()) & set(g[:k].tolist())) / k for f, g in zip(found, gt)]))


def sweep(search_one, queries, gt, k, efs, set_ef, stop=0.995):
    out = []
    for ef in efs:
        set_ef(ef)
        t, c = time.perf_counter(), time.thread_time()
        found = [search_one(q) for q in queries]
        dt, dc = time.perf_counter() - t, time.thread_time() - c
        r = recall(found, gt, k)
        out.append({"ef": ef, "recall": r, "qps": len(queries) / dt, "cpu_qps": len(queries) / dc})
        if r >= stop:
            break
    return out


def chunks(n, step=100_000):
    for s in range(0, n, step):
        yield s, min(n, s + step)


def cached_build(args, name, build, save, path):
    """Builds and saves, or reuses the saved index and its recorded build time."""
    meta = path + ".json"
    if not args.rebuild and os.path.exists(path) and os.path.exists(meta):
        with open(meta) as f:
            m = json.load(f)
            return m["build_s"], m.get("build_cpu_s"), True
    t, c = time.perf_counter(), time.process_time()
    idx = build()
    build_s, build_cpu_s = time.perf_counter() - t, time.process_time() - c
    tmp = path + ".tmp"
    save(idx, tmp)
    os.replace(tmp, path)
    with open(meta, "w") as f:
        json.dump({"build_s": build_s, "build_cpu_s": build_cpu_s, "system": name}, f)
    del idx
    return build_s, build_cpu_s, False


def load_timed(path, load):
    """Warm load (file in page cache), then a cold one after evicting the file; returns
    (index from the cold load, open_s, open_cold_s)."""
    t = time.perf_counter()
    idx = load()
    open_s = time.perf_counter() - t
    del idx
    evict(path)
    t = time.perf_counter()
    idx = load()
    return idx, open_s, time.perf_counter() - t


def result(system, build, cached, path, open_s, open_cold_s, first, mem, res, **extra):
    r = {"system": system, "build_s": build[0], "build_cpu_s": build[1], "build_cached": cached, "bytes": os.path.getsize(path),
         "open_s": open_s, "open_cold_s": open_cold_s, "first_query_s": first, "mem_bytes": mem,
         "sweep": res}
    r.update(extra)
    return r


def run_hnswlib(base, queries, gt, args):
    import hnswlib
    n, dim = base.shape
    path = os.path.join(args.work, "hnswlib.bin")

    def build():
        idx = hnswlib.Index(space="ip", dim=dim)
        idx.init_index(max_elements=n, M=args.m, ef_construction=args.ef_construction, random_seed=1)
        idx.set_num_threads(args.threads)
        for s, e in chunks(n):
            idx.add_items(base[s:e], np.arange(s, e))
        return idx

    build_s, build_cpu_s, cached = cached_build(args, "hnswlib", build, lambda i, p: i.save_index(p), path)
    rss0 = rss()

    def load():
        idx = hnswlib.Index(space="ip", dim=dim)
        idx.load_index(path, max_elements=n)
        return idx

    idx, open_s, open_cold_s = load_timed(path, load)
    idx.set_num_threads(1)
    t = time.perf_counter()
    idx.set_ef(64)
    idx.knn_query(queries[:1], k=args.k)
    first = time.perf_counter() - t
    search_one = lambda q: idx.knn_query(q, k=args.k)[0][0]
    res = sweep(search_one, queries, gt, args.k, args.efs, idx.set_ef)
    name = "hnswlib " + version("hnswlib")
    if args.serve:
        SERVABLE[name] = (idx.set_ef, search_one)
    return [result(name, (build_s, build_cpu_s), cached, path, open_s,
                   open_cold_s, first, rss() - rss0, res)]


def run_faiss(base, queries, gt, args):
    import faiss
    n, dim = base.shape
    path = os.path.join(args.work, "faiss.index")

    def build():
        faiss.omp_set_num_threads(args.threads)
        idx = faiss.IndexHNSWFlat(dim, args.m, faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = args.ef_construction
        for s, e in chunks(n):
            idx.add(np.ascontiguousarray(base[s:e]))
        return idx

    build_s, build_cpu_s, cached = cached_build(args, "faiss", build, faiss.write_index, path)
    rss0 = rss()
    idx, open_s, open_cold_s = load_timed(path, lambda: faiss.read_index(path))
    faiss.omp_set_num_threads(1)

    def set_ef(ef):
        idx.hnsw.efSearch = ef

    t = time.perf_counter()
    set_ef(64)
    idx.search(queries[:1], args.k)
    first = time.perf_counter() - t
    search_one = lambda q: idx.search(q[None, :], args.k)[1][0]
    res = sweep(search_one, queries, gt, args.k, args.efs, set_ef)
    name = "faiss " + faiss.__version__ + " IndexHNSWFlat"
    out = [result(name, (build_s, build_cpu_s), cached, path, open_s, open_cold_s, first, rss() - rss0, res)]
    if args.batch:
        # All queries in one call, faiss's own OpenMP threads over the queries.
        faiss.omp_set_num_threads(args.threads)
        bres = []
        for ef in args.efs:
            set_ef(ef)
            t, c = time.perf_counter(), time.process_time()
            _, found = idx.search(queries, args.k)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            r = recall(found, gt, args.k)
            bres.append({"ef": ef, "recall": r, "qps": len(queries) / dt, "cpu_qps": len(queries) / dc})
            if r >= 0.995:
                break
        out.append(result(f"{name} batch ({args.threads} thr)", (build_s, build_cpu_s), cached, path, open_s,
                          open_cold_s, first, rss() - rss0, bres, batch=True))
    if args.serve:
        def serve_ef(ef):
            # Single-query passes on one thread, as in the sweep (the batch set more).
            faiss.omp_set_num_threads(1)
            set_ef(ef)
        SERVABLE[name] = (serve_ef, search_one)
    return out


def run_usearch(base, queries, gt, args, dtype):
    from usearch.index import Index
    n, dim = base.shape
    # i8 codes are the f32 values scaled by 127: usearch recommends cosine for them (the
    # rows are unit length, so cosine and inner product rank alike).
    metric = "ip" if dtype == "f32" else "cos"
    path = os.path.join(args.work, f"usearch-{dtype}.usearch")

    def make():
        return Index(ndim=dim, metric=metric, dtype=dtype, connectivity=args.m,
                     expansion_add=args.ef_construction, expansion_search=64)

    def build():
        idx = make()
        for s, e in chunks(n):
            idx.add(np.arange(s, e, dtype=np.uint64), np.ascontiguousarray(base[s:e]), threads=args.threads)
        return idx

    build_s, build_cpu_s, cached = cached_build(args, f"usearch {dtype}", build, lambda i, p: i.save(p), path)
    rss0 = rss()

    def load():
        idx = make()
        idx.load(path)
        return idx

    idx, open_s, open_cold_s = load_timed(path, load)

    def set_ef(ef):
        idx.expansion_search = ef

    t = time.perf_counter()
    idx.search(queries[0], args.k, threads=1)
    first = time.perf_counter() - t
    search_one = lambda q: idx.search(q, args.k, threads=1).keys
    res = sweep(search_one, queries, gt, args.k, args.efs, set_ef)
    import usearch
    name = f"usearch {usearch.__version__} {dtype}"
    if args.serve:
        SERVABLE[name] = (set_ef, search_one)
    return [result(name, (build_s, build_cpu_s), cached, path, open_s,
                   open_cold_s, first, rss() - rss0, res, simd=idx.hardware_acceleration)]


def serve(queries, gt, k):
    """Answers {"system", "ef"} requests on stdin with one timed pass each."""
    emit({"serving": sorted(SERVABLE)})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            set_ef, search_one = SERVABLE[req["system"]]
            ef = int(req["ef"])
        except (ValueError, KeyError, TypeError) as e:
            emit({"error": f"bad request {line.strip()!r}: {e!r}"})
            continue
        set_ef(ef)
        t, c = time.perf_counter(), time.thread_time()
        found = [search_one(q) for q in queries]
        dt, dc = time.perf_counter() - t, time.thread_time() - c
        emit({"pass": req["system"], "ef": ef, "recall": recall(found, gt, k), "qps": len(queries) / dt,
              "cpu_qps": len(queries) / dc})


def kernel_info(systems):
    """One line per library: version and the SIMD level it runs with on this CPU."""
    from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__, __cpu_features__
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    emit({"info": f"numpy {np.__version__}: SIMD baseline {','.join(__cpu_baseline__)}, dispatch "
                  f"{','.join(f for f in __cpu_dispatch__ if __cpu_features__.get(f))}; "
                  f"BLAS {blas.get('name')} {blas.get('version')} (unused: ground truth is computed in Rust); "
                  f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')} "
                  f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}"})
    if "faiss" in systems:
        try:
            import faiss
            emit({"info": f"faiss {faiss.__version__}: compile options {faiss.get_compile_options().strip()}; "
                          f"CPU instruction sets {','.join(sorted(faiss.loader.supported_instruction_sets()))}"})
        except ImportError as e:
            emit({"info": f"faiss: {e}"})
    if "usearch" in systems:
        try:
            import usearch
            from usearch.index import Index
            acc = {d: Index(ndim=1024, metric="ip" if d == "f32" else "cos", dtype=d).hardware_acceleration
                   for d in ("f32", "i8")}
            emit({"info": f"usearch {usearch.__version__}: SimSIMD kernels f32 {acc['f32']}, i8 {acc['i8']}"})
        except ImportError as e:
            emit({"info": f"usearch: {e}"})
    if "hnswlib" in systems:
        try:
            import hnswlib
            emit({"info": f"hnswlib {version('hnswlib')}: SIMD chosen when its wheel was compiled (no run-time report)"})
        except ImportError as e:
            emit({"info": f"hnswlib: {e}"})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="folder with base.npy, queries.npy, gt.npy")
    p.add_argument("--work", required=True, help="folder for the built indexes (kept)")
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--efs", default="10,16,20,24,32,40,48,64,80,96,128,160,200,256,320,400,512,640,800,1024")
    p.add_argument("--systems", default="hnswlib,faiss,usearch")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--batch", action="store_true", help="also faiss's batch search")
    p.add_argument("--serve", action="store_true", help="keep the indexes and answer timed passes on stdin")
    args = p.parse_args()
    args.efs = [int(x) for x in args.efs.split(",")]
    systems = [s for s in args.systems.split(",") if s]
    kernel_info(systems)
    base = np.load(os.path.join(args.data, "base.npy"), mmap_mode="r")
    queries = np.ascontiguousarray(np.load(os.path.join(args.data, "queries.npy")))
    gt = np.load(os.path.join(args.data, "gt.npy")).astype(np.int64)
    os.makedirs(args.work, exist_ok=True)
    runners = {
        "hnswlib": lambda: run_hnswlib(base, queries, gt, args),
        "faiss": lambda: run_faiss(base, queries, gt, args),
        "usearch": lambda: run_usearch(base, queries, gt, args, "f32") + run_usearch(base, queries, gt, args, "i8"),
    }
    for name in systems:
        if name not in runners:
            emit({"system": name, "error": f"unknown peer {name!r} (hnswlib, faiss, usearch)"})
            continue
        try:
            for r in runners[name]():
                emit(r)
        except ImportError as e:
            emit({"system": name, "error": str(e)})
    if args.serve:
        serve(queries, gt, args.k)


if __name__ == "__main__":
    sys.exit(main())
