"""Evaluation at scale: mAP@all for 20,000 queries against a 20,000-item gallery.

    python benchmarks/bench_eval.py --backend numpy          # 20,000 x 20,000, both directions
    python benchmarks/bench_eval.py --backend cupy --quick   # 5,000 x 5,000

Random 200-d float32 embeddings of 10 classes (a class mean plus noise, so the mAP is
neither 0 nor 1), paired like a real split: "images" and "texts" share their labels, and
both directions are scored (image queries against the text gallery and the reverse).

Two implementations, each in a fresh Python process so that each peak memory is its own:

  acmr_np    acmr_np.metrics.mean_average_precision: queries in chunks of --chunk-size
             rows, a (chunk x gallery) similarity block at a time, sorted and scored
             vectorised;
  baseline   the plain way: the full (queries x gallery) similarity matrix, then for
             each query a full stable argsort of its row and its average precision.

Both rank by cosine similarity with the same tie rule (stable: equal similarities in
gallery order), so they must agree; the script checks that they do. Reported: seconds
per direction, and the peak memory of the process above what it held once the
embeddings were made (host RSS; on CuPy also the device memory held by CuPy's pool).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy

try:
    import acmr_np  # noqa: F401  (installed, or run from the repository root)
except ImportError:  # `python benchmarks/bench_eval.py` from a checkout without install
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from acmr_np.backend import BACKENDS, backend_name, get_backend, to_host  # noqa: E402
from acmr_np.errors import InputError  # noqa: E402

# The helpers both benchmarks share (device sync, peak memory, GiB, the machine's
# description) live in bench_train, next to this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import describe_machine, gib, peak_rss_bytes, synchronize  # noqa: E402

METHODS = ("acmr_np", "baseline")


def current_rss_bytes():
    """Resident memory of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def make_embeddings(n, dim, n_classes, seed):
    """Paired embeddings (img, txt) (n, dim) float32 and labels (n,) int64, on the host."""
    rng = numpy.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n).astype(numpy.int64)
    means = rng.standard_normal((n_classes, dim), dtype=numpy.float32)
    img = means[labels] + 2.0 * rng.standard_normal((n, dim), dtype=numpy.float32)
    txt = means[labels] + 2.0 * rng.standard_normal((n, dim), dtype=numpy.float32)
    return img, txt, labels


def baseline_map(query, q_labels, gallery, g_labels, xp):
    """mAP@all the plain way: full similarity matrix, then one full stable argsort per query."""
    def unit(x):
        return x / xp.maximum(xp.sqrt((x * x).sum(axis=1, keepdims=True)), 1e-12)

    sim = unit(query) @ unit(gallery).T                       # (nq, ng), all at once
    ranks = xp.arange(1, gallery.shape[0] + 1, dtype=xp.float64)
    ap = xp.empty(query.shape[0], dtype=xp.float64)
    stable = {"kind": "stable"} if xp is numpy else {}        # CuPy's argsort is always stable
    for i in range(query.shape[0]):
        order = xp.argsort(-sim[i], **stable)
        rel = g_labels[order] == q_labels[i]
        hits = xp.cumsum(rel)
        ap[i] = (hits[rel] / ranks[rel]).sum() / xp.maximum(hits[-1], 1)
    return float(ap.mean())


def run_method(method, backend, n, dim, n_classes, chunk_size, seed):
    """Both directions with one implementation; returns the measurements (worker process)."""
    from acmr_np.metrics import mean_average_precision
    from acmr_np.ranking import default_chunk_size

    xp = get_backend(backend)
    if chunk_size is None:
        chunk_size = default_chunk_size(xp, n)
    img, txt, labels = make_embeddings(n, dim, n_classes, seed)
    img, txt, labels = xp.asarray(img), xp.asarray(txt), xp.asarray(labels)
    synchronize(xp)
    pool = xp.get_default_memory_pool() if backend_name(xp) == "cupy" else None
    pool_before = pool.total_bytes() if pool else None
    rss_before = current_rss_bytes()
    out = {"method": method, "backend": backend, "n": n, "dim": dim, "chunk_size": chunk_size}
    for name, (q, g) in (("img2txt", (img, txt)), ("txt2img", (txt, img))):
        synchronize(xp)
        t0 = time.perf_counter()
        if method == "acmr_np":
            value = mean_average_precision(q, labels, g, labels, chunk_size=chunk_size)
        else:
            value = baseline_map(q, labels, g, labels, xp)
        synchronize(xp)
        out[f"seconds_{name}"] = time.perf_counter() - t0
        out[f"map_{name}"] = value
    out["rss_before_bytes"] = rss_before
    out["peak_above_embeddings_bytes"] = peak_rss_bytes() - rss_before
    out["device_pool_above_embeddings_bytes"] = pool.total_bytes() - pool_before if pool else None
    out["embeddings_bytes"] = int(to_host(img).nbytes * 2)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="numpy", choices=BACKENDS)
    p.add_argument("--n", type=int, default=20000, help="queries = gallery items per direction")
    p.add_argument("--dim", type=int, default=200)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--chunk-size", type=int, default=None,
                   help="acmr_np's queries per chunk (default: the backend's, ranking.default_chunk_size: "
                        "256 on numpy)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--quick", action="store_true", help="5,000 x 5,000 instead of --n")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the measurements to this file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one method, print JSON
    args = p.parse_args(argv)
    try:
        get_backend(args.backend)
    except InputError as exc:
        print(f"bench_eval: {exc}", file=sys.stderr)
        return 2
    n = 5000 if args.quick else args.n
    if args.worker:
        print(json.dumps(run_method(args.worker, args.backend, n, args.dim, args.classes,
                                    args.chunk_size, args.seed)))
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in METHODS for m in methods):
        p.error(f"--methods: expected some of {', '.join(METHODS)}, got {args.methods!r}")

    print("\n".join(describe_machine(get_backend(args.backend))))
    print(f"mAP@all, {n} queries x {n} gallery items, {args.dim}-d float32, {args.classes} classes, "
          f"both directions, backend {args.backend}")
    results = []
    for method in methods:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", method, "--backend", args.backend,
               "--n", str(n), "--dim", str(args.dim), "--classes", str(args.classes),
               "--seed", str(args.seed)] + (["--chunk-size", str(args.chunk_size)] if args.chunk_size else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"bench_eval: method {method} failed (exit {proc.returncode})")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    print(f"\n{'method':9} {'img->txt s':>10} {'txt->img s':>10} {'total s':>8} {'mAP i->t':>9} {'mAP t->i':>9} "
          f"{'peak above embeddings':>22}")
    for r in results:
        r["seconds_total"] = r["seconds_img2txt"] + r["seconds_txt2img"]
        dev = r["device_pool_above_embeddings_bytes"]
        print(f"{r['method']:9} {r['seconds_img2txt']:10.2f} {r['seconds_txt2img']:10.2f} "
              f"{r['seconds_total']:8.2f} {r['map_img2txt']:9.5f} {r['map_txt2img']:9.5f} "
              f"{gib(r['peak_above_embeddings_bytes']):>22}" + (f"  device {gib(dev)}" if dev is not None else ""))
    print(f"(embeddings: {gib(results[0]['embeddings_bytes'])}; peak = the process's peak RSS minus its RSS "
          "once the embeddings were made)")
    for r in results:
        if r["method"] == "acmr_np":
            print(f"acmr_np ranked {r['chunk_size']} queries per chunk")
    if len(results) == 2:
        a, b = results
        diff = max(abs(a[k] - b[k]) for k in ("map_img2txt", "map_txt2img"))
        # Not bit for bit: a (chunk x gallery) product and the full one may round the last
        # bit of a float32 similarity differently, which can swap two near-equal items.
        print(f"{a['method']} / {b['method']} time: {a['seconds_total'] / b['seconds_total']:.2f}; "
              f"mAP values differ by {diff:.1e} ({'agree' if diff <= 1e-6 else 'DISAGREE'} to 1e-6)")
        if diff > 1e-6:
            return 1
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
