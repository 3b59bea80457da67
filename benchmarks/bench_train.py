"""Training speed of acmr_np against the machine's own matrix-product rate.

    python benchmarks/bench_train.py --backend numpy          # all three cases
    python benchmarks/bench_train.py --backend cupy --quick   # a short run on the GPU

Cases (2,173 training pairs, 10 classes, random features of the stated shapes: one mean
per class and modality plus unit noise, the same class means in the training, validation
and test splits, so the validation mAP that closes each epoch is meaningful):

  shallow    Wikipedia-sized: 128-d image and 10-d text features, the default model
             configuration (ACMRConfig()), batch 64;
  deep-64    the paper's deep-feature setting: 4,096-d image and 5,000-d text features,
             projectors 4096 -> 2000 -> 200 and 5000 -> 500 -> 200, batch 64;
  deep-256   the same at batch 256.

Each case runs in a fresh Python process (so that its peak memory is its own): one
warm-up epoch, then --epochs timed epochs of ``acmr_np.training.Training.train_epoch``,
the real training loop (with its default fast path, acmr_np.fast). An epoch there ends
with the validation mAP, which it times on its own (the row's ``val_seconds``); that part
is left out of the training rate ("train s/epoch" is the epoch minus its validation). In the same run the script measures the float32 matrix-product rate of
the backend (a large ``a @ b``), before and after the cases, and uses the higher of the
two as the reference.

FLOPs per epoch are counted from the layer shapes, over the actual batch sizes of the
epoch (the last batch is partial): a matrix product of (N, a) by (a, b) is 2*N*a*b.
Every Linear layer costs one product forward (x W) and two backward (x^T dout for the
weight gradient, dout W^T for the input gradient); the projectors' first layers skip
the input gradient (their input is data), so it is not counted. The projectors see
N = batch rows, the label and modality classifiers 2 * batch (both modalities). The
triplet loss adds its (batch x batch) products: the one-hot selections (4 per direction)
and, with hardest-negative sampling, the distance matrix (1 per direction). Elementwise
work (tanh, the losses, Adam) is not counted: it is the overhead the rate exposes.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy

try:
    import acmr_np  # noqa: F401  (installed, or run from the repository root)
except ImportError:  # `python benchmarks/bench_train.py` from a checkout without install
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from acmr_np.backend import BACKENDS, backend_name, get_backend  # noqa: E402
from acmr_np.errors import InputError  # noqa: E402

N_TRAIN, N_VAL, N_CLASSES = 2173, 462, 10
CASES = {
    # name: (d_img, d_txt, config overrides, batch size)
    "shallow": (128, 10, {}, 64),
    "deep-64": (4096, 5000, {"img_hidden": (2000,), "txt_hidden": (500,), "dim": 200}, 64),
    "deep-256": (4096, 5000, {"img_hidden": (2000,), "txt_hidden": (500,), "dim": 200}, 256),
}


# ---- helpers -------------------------------------------------------------------------

def synchronize(xp):
    """Wait for the device to finish queued work (CuPy runs asynchronously); no-op on NumPy."""
    if backend_name(xp) == "cupy":
        xp.cuda.Device().synchronize()


def peak_rss_bytes():
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def device_pool_bytes(xp):
    """Bytes held by CuPy's memory pool (it keeps freed blocks, so ~ the peak in use); None on NumPy."""
    if backend_name(xp) != "cupy":
        return None
    return int(xp.get_default_memory_pool().total_bytes())


def matmul_rate(xp, n, min_seconds=1.0):
    """Best float32 FLOP/s of an (n, n) @ (n, n) product on xp, over repeats lasting >= min_seconds."""
    rng = numpy.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((n, n), dtype=numpy.float32))
    b = xp.asarray(rng.standard_normal((n, n), dtype=numpy.float32))
    out = xp.empty((n, n), dtype=numpy.float32)
    xp.matmul(a, b, out=out)  # warm-up (thread pool, cuBLAS handle)
    synchronize(xp)
    best, spent = float("inf"), 0.0
    while spent < min_seconds or best == float("inf"):
        t0 = time.perf_counter()
        xp.matmul(a, b, out=out)
        synchronize(xp)
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return 2.0 * n ** 3 / best


def _linear_shapes(mlp):
    """(in, out, input_grad) for each Linear layer of an MLP."""
    return [(l.in_dim, l.out_dim, getattr(l, "input_grad", True)) for l in mlp.linears()]


def step_flops(model, b, every_input_grad=False):
    """Matrix-product FLOPs of one training step on a batch of b pairs (see the module doc).
    every_input_grad: count dL/dx for every layer, computed or not (3 products per layer)."""
    c = model.config
    total = 0
    for part, rows in (("img_projector", b), ("txt_projector", b),
                       ("label_classifier", 2 * b), ("modality_classifier", 2 * b)):
        for d_in, d_out, input_grad in _linear_shapes(getattr(model, part)):
            total += (3 if input_grad or every_input_grad else 2) * 2 * rows * d_in * d_out
    if c.alpha > 0:  # L_imi (assumes every batch has two classes or more, true for these data)
        per_direction = 4 + (1 if c.sampling == "hardest" else 0)
        total += 2 * per_direction * 2 * b * b * c.dim
    return total


def step_products_seconds(model, b, xp, timer):
    """Seconds that the Linear layers' matrix products of one step take on their own
    (same shapes, fresh random operands): the floor under the forward + backward pass."""
    rng = numpy.random.default_rng(0)
    total = 0.0
    for part, rows in (("img_projector", b), ("txt_projector", b),
                       ("label_classifier", 2 * b), ("modality_classifier", 2 * b)):
        for d_in, d_out, input_grad in _linear_shapes(getattr(model, part)):
            x, W, dout = (xp.asarray(rng.standard_normal(shape, dtype=numpy.float32))
                          for shape in ((rows, d_in), (d_in, d_out), (rows, d_out)))
            dW = xp.empty_like(W)
            total += timer(lambda: x @ W) + timer(lambda: xp.matmul(x.T, dout, out=dW))
            if input_grad:
                total += timer(lambda: dout @ W.T)
    return total


def epoch_flops(model, n, batch_size, every_input_grad=False):
    return sum(step_flops(model, min(batch_size, n - s), every_input_grad) for s in range(0, n, batch_size))


def make_data(d_img, d_txt, seed):
    """Random paired data of the given shapes: class-dependent means plus noise. One set of
    class means for every split, so validation and test pairs come from the same classes
    as the training pairs and the validation mAP measures what training learned."""
    from acmr_np.datasets import PairedDataset, Split

    rng = numpy.random.default_rng(seed)
    img_means = rng.standard_normal((N_CLASSES, d_img), dtype=numpy.float32)
    txt_means = rng.standard_normal((N_CLASSES, d_txt), dtype=numpy.float32)

    def split(n):
        labels = rng.integers(0, N_CLASSES, n).astype(numpy.int64)
        img = img_means[labels] + rng.standard_normal((n, d_img), dtype=numpy.float32)
        txt = txt_means[labels] + rng.standard_normal((n, d_txt), dtype=numpy.float32)
        return Split(img, txt, labels)

    return PairedDataset(split(N_TRAIN), split(N_VAL), split(N_VAL), N_CLASSES,
                         f"random(d_img={d_img}, d_txt={d_txt}, seed={seed})", False)


# ---- one case, in its own process -------------------------------------------------------

def run_case(name, backend, epochs, seed, projector_input_grad=False):
    """Train one case and return its measurements as a dict (runs in a worker process)."""
    from acmr_np.config import ACMRConfig, TrainConfig
    from acmr_np.training import Training

    xp = get_backend(backend)
    d_img, d_txt, overrides, batch = CASES[name]
    data = make_data(d_img, d_txt, seed)
    cfg = ACMRConfig(**overrides)
    run = Training(data, cfg, TrainConfig(epochs=1 + epochs, batch_size=batch, seed=seed, backend=backend))
    if projector_input_grad:  # compute the projectors' unneeded input gradients too (for comparison)
        for mlp in (run.model.img_projector, run.model.txt_projector):
            mlp.linears()[0].input_grad = True

    # The validation mAP ends with a copy of the score to the host, which waits for the
    # device, so the row's val_seconds are complete on either backend.
    val_seconds, epoch_seconds = [], []
    for _ in range(1 + epochs):  # the first epoch is the warm-up
        synchronize(xp)
        t0 = time.perf_counter()
        row = run.train_epoch()
        synchronize(xp)
        epoch_seconds.append(time.perf_counter() - t0)
        val_seconds.append(row["val_seconds"])
    train_seconds = [e - v for e, v in zip(epoch_seconds, val_seconds)][1:]
    epoch_seconds, val_seconds = epoch_seconds[1:], val_seconds[1:]

    # Where a step's time goes: forward + backward against the two optimisers, on one
    # fixed full batch (same arrays every repeat), split as FastTrainer.train_step splits it
    # (L_reg is in the embedding player's Adam step, as weight decay).
    model, trainer = run.model, run.trainer
    bi, bt = xp.asarray(data.train.img[:batch]), xp.asarray(data.train.txt[:batch])
    bl = xp.asarray(data.train.labels[:batch])
    noise = xp.asarray(numpy.random.default_rng(seed).random((2, batch, batch), dtype=numpy.float32))

    def per_call(fn, reps=10):  # the fastest of reps calls: the least disturbed by other processes
        fn()
        best = float("inf")
        for _ in range(reps):
            synchronize(xp)
            t0 = time.perf_counter()
            fn()
            synchronize(xp)
            best = min(best, time.perf_counter() - t0)
        return best

    fwd_bwd = per_call(lambda: model.loss_and_grads(bi, bt, bl, noise, 0.05, l_reg=False))
    products = step_products_seconds(model, batch, xp, per_call)
    opt_emb = per_call(lambda: trainer.opt_emb.step(model.named("grads", model.EMBEDDING_PARTS)))
    opt_adv = per_call(lambda: trainer.opt_adv.step(model.named("grads", model.ADVERSARY_PARTS)))

    n_params = sum(int(p.size) for p in model.named("params").values())
    return {
        "case": name, "backend": backend, "batch": batch, "d_img": d_img, "d_txt": d_txt,
        "config": cfg.to_dict(), "n_params": n_params, "steps_per_epoch": run.steps_per_epoch,
        "epoch_seconds": epoch_seconds, "train_seconds": train_seconds, "val_seconds": val_seconds,
        "flops_per_epoch": epoch_flops(model, N_TRAIN, batch), "flops_per_step": step_flops(model, batch),
        "flops_per_epoch_every_input_grad": epoch_flops(model, N_TRAIN, batch, every_input_grad=True),
        "projector_input_grad": projector_input_grad,
        "step_fwd_bwd_s": fwd_bwd, "step_products_s": products, "step_opt_emb_s": opt_emb,
        "step_opt_adv_s": opt_adv,
        "peak_rss_bytes": peak_rss_bytes(), "device_pool_bytes": device_pool_bytes(xp),
        "last_train_row": {k: row[k] for k in ("L_imi", "L_imd", "L_adv", "val_map")},
    }


# ---- the report --------------------------------------------------------------------------

def describe_machine(xp):
    """A few lines: CPU, cores, BLAS (threadpoolctl if installed), GPU if any."""
    lines = []
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    lines.append(f"cpu: {cpu}, {os.cpu_count()} logical cores; numpy {numpy.__version__}")
    try:
        from threadpoolctl import threadpool_info
        for info in threadpool_info():
            if info.get("user_api") == "blas":
                lines.append(f"blas: {info.get('internal_api')} {info.get('version')} "
                             f"kernel={info.get('architecture')} threads={info.get('num_threads')}")
    except ImportError:
        try:
            blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]  # NumPy >= 1.26
            lines.append(f"blas: {blas.get('name')} {blas.get('version')} (threadpoolctl not installed)")
        except (TypeError, KeyError):
            lines.append("blas: see numpy.show_config() (threadpoolctl not installed)")
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                      "OMP_NUM_THREADS") if k in os.environ}
    lines.append(f"environment: {env or 'no OPENBLAS_*/OMP_* variables set'}")
    if backend_name(xp) == "cupy":
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        lines.append(f"gpu: {gpu}, cupy {xp.__version__}")
    return lines


def gib(nbytes):
    return f"{nbytes / 2 ** 30:.2f} GiB"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="numpy", choices=BACKENDS)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per case, after one warm-up epoch")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--quick", action="store_true", help="one timed epoch and a smaller matrix-product probe")
    p.add_argument("--matmul-n", type=int, default=None,
                   help="size of the matrix-product probe (default 4096, 2048 with --quick)")
    p.add_argument("--matmul-seconds", type=float, default=1.0,
                   help="how long each matrix-product probe repeats its product (the best repeat counts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write every measurement to this file")
    p.add_argument("--projector-input-grad", action="store_true",
                   help="also compute the projectors' input gradients, which training does not need "
                        "(shows what skipping them saves)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = p.parse_args(argv)
    try:
        xp = get_backend(args.backend)
    except InputError as exc:
        print(f"bench_train: {exc}", file=sys.stderr)
        return 2
    epochs = 1 if args.quick else args.epochs
    if epochs < 1:
        p.error("--epochs must be at least 1")

    if args.worker:
        print(json.dumps(run_case(args.worker, args.backend, epochs, args.seed, args.projector_input_grad)))
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; expected some of {', '.join(CASES)}")

    n = args.matmul_n or (2048 if args.quick else 4096)
    if n < 1 or not args.matmul_seconds >= 0:
        p.error("--matmul-n must be positive and --matmul-seconds non-negative")
    print("\n".join(describe_machine(xp)))
    rate_before = matmul_rate(xp, n, args.matmul_seconds)
    print(f"float32 matmul ({n}x{n} @ {n}x{n}) on {args.backend}: {rate_before / 1e9:.1f} GFLOP/s")
    results = []
    for case in cases:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", case, "--backend", args.backend,
               "--epochs", str(epochs), "--seed", str(args.seed)]
        if args.projector_input_grad:
            cmd.append("--projector-input-grad")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"bench_train: case {case} failed (exit {proc.returncode})")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"  {case}: done, train {statistics.median(r['train_seconds']):.3f} s/epoch, "
              f"val mAP after the last epoch {r['last_train_row']['val_map']:.3f} "
              f"(chance ~{1 / N_CLASSES:.2f})", flush=True)
    rate_after = matmul_rate(xp, n, args.matmul_seconds)
    rate = max(rate_before, rate_after)
    print(f"float32 matmul again after the cases: {rate_after / 1e9:.1f} GFLOP/s; reference = "
          f"the higher, {rate / 1e9:.1f} GFLOP/s")

    print()
    print(f"{'case':9} {'batch':>5} {'params':>7} {'epoch s':>8} {'train s':>8} {'(min)':>6} {'val s':>6} "
          f"{'GFLOP/ep':>9} {'GFLOP/s':>8} {'of matmul':>9} {'fwd+bwd ms':>10} {'products':>8} {'adam ms':>8} "
          f"{'peak RSS':>9}")
    for r in results:
        train_s = statistics.median(r["train_seconds"])
        achieved = r["flops_per_epoch"] / train_s
        r.update(train_s_median=train_s, achieved_flops=achieved, fraction_of_matmul=achieved / rate)
        print(f"{r['case']:9} {r['batch']:5d} {r['n_params'] / 1e6:6.2f}M "
              f"{statistics.median(r['epoch_seconds']):8.3f} {train_s:8.3f} {min(r['train_seconds']):6.3f} "
              f"{statistics.median(r['val_seconds']):6.3f} {r['flops_per_epoch'] / 1e9:9.2f} "
              f"{achieved / 1e9:8.1f} {achieved / rate:9.1%} {r['step_fwd_bwd_s'] * 1e3:10.1f} "
              f"{r['step_products_s'] * 1e3:8.1f} "
              f"{(r['step_opt_emb_s'] + r['step_opt_adv_s']) * 1e3:8.1f} {gib(r['peak_rss_bytes']):>9}"
              + (f"  device pool {gib(r['device_pool_bytes'])}" if r["device_pool_bytes"] is not None else ""))
    print("\nepoch s, train s, val s: medians over the timed epochs; train s = the epoch minus its validation "
          "mAP, (min) its fastest epoch.\nGFLOP/ep: matrix-product FLOPs performed per epoch; GFLOP/s and "
          "'of matmul' use the median train s.\nfwd+bwd (ACMR.loss_and_grads), products (its Linear layers' "
          "matrix products alone) and adam (both players' optimisers): one full batch, fastest of 10 calls.")
    if any(r["flops_per_epoch_every_input_grad"] != r["flops_per_epoch"] for r in results):
        print("Counting the projectors' first-layer input gradients as well, which were not computed "
              "(3 products for every layer):")
        for r in results:
            conv = r["flops_per_epoch_every_input_grad"] / r["train_s_median"]
            r["fraction_of_matmul_every_input_grad"] = conv / rate
            print(f"  {r['case']:9} {r['flops_per_epoch_every_input_grad'] / 1e9:8.2f} GFLOP/epoch, "
                  f"{conv / 1e9:6.1f} GFLOP/s, {conv / rate:6.1%} of matmul")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": describe_machine(xp), "matmul_flops": [rate_before, rate_after],
                       "matmul_n": n, "cases": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
