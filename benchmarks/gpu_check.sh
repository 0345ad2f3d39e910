#!/usr/bin/env bash
# The GPU check of issue 10, for when a device machine is lent (CI never runs it):
#   bash benchmarks/gpu_check.sh            (from the repository root, torch with CUDA installed)
# 1. the Triton kernels' tests compiled for the GPU (no interpreter) and the CUDA paths of the others;
# 2. every benchmark (entropy bandwidth share, AlterLinear vs nn.Linear and PEFT at the Llama-8B
#    shape, train-step and generation ratios), in under 8 minutes; one table of ratios at the end.
# Results: $OUT (default /tmp/gpu_check): tests.txt, bench.txt, bench.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 2)" \
  || { echo "gpu_check: no CUDA device here; nothing to check"; exit 2; }
python -c "import alter, alter_kernels" 2>/dev/null || pip install -q -e ".[dev]"
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
echo "== tests (Triton compiled) =="
timeout 240 python -m pytest -q -x -p no:cacheprovider tests/kernels/ \
  tests/test_alter_layer.py tests/test_no_host_sync.py 2>&1 | tee "$OUT/tests.txt" | tail -3
echo "== benchmarks =="
timeout 300 python -m pytest benchmarks/ --benchmark-only -q -p no:cacheprovider \
  --benchmark-json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1 || { echo "benchmarks failed: see $OUT/bench.txt"; tail -20 "$OUT/bench.txt"; }
sed -n '/ratios: reference/,$p' "$OUT/bench.txt"
