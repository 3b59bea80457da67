#!/usr/bin/env bash
# The checks that need a real GPU, in one script (docs/PERFORMANCE.md, "What remains to be
# measured on a GPU"). From the repository root, on a machine with an NVIDIA GPU and CuPy
# (pip install -e '.[gpu,test]', the cupy-cudaXXx wheel of its CUDA version):
#
#     bash benchmarks/gpu_check.sh          # writes its JSON files to $OUT (default gpu_check_out/)
#
# 1. the gpu-marked tests on real CuPy (cuBLAS rounding, the fused optimiser kernels);
# 2. bench_train --backend cupy: shallow, deep-64, deep-256 (the >= 20x target is deep-256);
# 3. bench_eval --backend cupy: mAP@all on 20,000 x 20,000, acmr_np and the baseline;
# 4. deep-256 against the NumPy figures of docs/PERFORMANCE.md.
# Expected to take a few minutes (the first CuPy kernels are compiled on their first call);
# every step has a time limit, 9.5 minutes in all. Exit status 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check_out}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if ! "$PY" -c "import cupy; assert cupy.is_available(); print('cupy', cupy.__version__, cupy.cuda.runtime.getDeviceProperties(0)['name'])"; then
    echo "gpu_check: CuPy with a usable CUDA device is needed" >&2
    exit 2
fi

echo "== 1. the gpu-marked tests on real CuPy =="
timeout 150 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider tests 2>&1 | tail -n 20 || status=1

echo "== 2. training speed: bench_train =="
timeout 270 "$PY" benchmarks/bench_train.py --backend cupy --json "$OUT/bench_train_cupy.json" || status=1

echo "== 3. evaluation speed: bench_eval =="
timeout 150 "$PY" benchmarks/bench_eval.py --backend cupy --json "$OUT/bench_eval_cupy.json" || status=1

echo "== 4. deep-256 against NumPy on the 2-core machine (docs/PERFORMANCE.md) =="
"$PY" - "$OUT/bench_train_cupy.json" <<'EOF' || status=1
import json, sys
cases = {c["case"]: c for c in json.load(open(sys.argv[1]))["cases"]}
r = cases["deep-256"]
epoch = sorted(r["epoch_seconds"])[len(r["epoch_seconds"]) // 2]
train = r["train_s_median"]
# NumPy, deep-256, default environment: epoch 0.659-0.684 s, training 0.609-0.623 s
print(f"deep-256 on the GPU: epoch {epoch:.4f} s, training {train:.4f} s; against NumPy: "
      f"{0.659 / epoch:.1f}-{0.684 / epoch:.1f}x per epoch, {0.609 / train:.1f}-{0.623 / train:.1f}x of training "
      f"(target >= 20x per epoch, i.e. epoch <= 0.033 s: {'met' if 0.659 / epoch >= 20 else 'NOT met'})")
EOF
echo "gpu_check: $([ $status -eq 0 ] && echo 'every step passed' || echo 'a step FAILED (see above)'); JSON in $OUT/"
exit $status
