#!/usr/bin/env bash
# The GPU check, for when a device machine is lent (CI never runs it):
#   bash benchmarks/gpu_check.sh            (from the repository root, torch with CUDA installed)
# 1. the Triton kernels' tests compiled for the GPU (no interpreter) and the CUDA paths of the others;
# 2. every benchmark (entropy bandwidth share, AlterLinear vs nn.Linear and PEFT at the Llama-8B
#    shape, train-step and generation ratios), in under 8 minutes; one table of ratios at the end.
# Results: $OUT (default /tmp/gpu_check): gpu.txt, tests.txt, bench.txt, bench.json.
# A machine without network: where `import alter` fails, the checkout is put on PYTHONPATH and the C++
# extension is built in place (pybind11 + a compiler); set ALTER_BENCH_MODEL_SHAPE to a folder holding
# SmolLM2's config.json and tokenizer when the embedded GGUF is not installed (random weights, same shapes).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 2)" \
  || { echo "gpu_check: no CUDA device here; nothing to check"; exit 2; }
if ! python -c "import alter, alter_kernels" 2>/dev/null; then
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  python -c "import alter, alter_kernels" || pip install -q -e ".[dev]"
fi
python -c "from alter_kernels import _C" 2>/dev/null \
  || python setup.py -q build_ext --inplace > "$OUT/build.txt" 2>&1 || echo "C++ extension not built (see build.txt)"
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
XDIST=""
python -c "import xdist" 2>/dev/null && XDIST="-n 8"
echo "== tests (Triton compiled) =="
timeout ${TESTS_TIMEOUT:-240} python -m pytest -q $XDIST -p no:cacheprovider tests/kernels/ \
  tests/test_alter_layer.py tests/test_no_host_sync.py > "$OUT/tests.txt" 2>&1 || true
tail -15 "$OUT/tests.txt"
echo "== benchmarks =="
timeout ${BENCH_TIMEOUT:-300} python -m pytest benchmarks/ --benchmark-only -q -p no:cacheprovider \
  --benchmark-json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1 || { echo "benchmarks failed: see $OUT/bench.txt"; tail -20 "$OUT/bench.txt"; }
sed -n '/ratios: reference/,$p' "$OUT/bench.txt"
