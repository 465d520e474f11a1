#!/usr/bin/env bash
# The GPU checks, in one go, for a machine with a CUDA GPU (e.g. the workplace's lent device):
# the tests marked `gpu`, training throughput and time to convergence (fp32 and bf16-mixed),
# and the end-to-end `sigma run --bin 2` on the demo cube.
#
#   bash benchmarks/gpu_check.sh            # results under $OUT (default /tmp/sigma_gpu)
#   SKIP_PIPELINE=1 bash benchmarks/gpu_check.sh   # tests and training only
#
# Where sigma's dependencies are not installed, wheels in .whl/ are installed to /tmp/site first
# (the lent machine has torch, Lightning and scikit-learn but not xraydb, jsonargparse, zarr...).
set -uo pipefail
OUT=${OUT:-/tmp/sigma_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -d .whl ] && ! "$PY" -c "import xraydb, jsonargparse" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" -c "import torch, lightning, sklearn, xarray, sigma; print('torch', torch.__version__, 'lightning', lightning.__version__, 'sklearn', sklearn.__version__, 'xarray', xarray.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))" 2>&1 | tee "$OUT/versions.txt"
rc=0
"$PY" -m pytest tests/test_gpu.py -o addopts="" -m gpu -p no:cacheprovider -q -rA 2>&1 \
    | tee "$OUT/pytest_gpu.log" || rc=1
"$PY" benchmarks/training.py --accelerator gpu --precision 32-true bf16-mixed \
    --batch-sizes 32 1024 4096 16384 --out "$OUT/training_gpu.json" 2>&1 \
    | tee "$OUT/training_gpu.log" || rc=1
[ -n "${SKIP_PIPELINE:-}" ] || "$PY" benchmarks/pipeline.py --repeats 2 --accelerator gpu --out "$OUT/pipeline_gpu.json" 2>&1 \
    | tee "$OUT/pipeline_gpu.log" || rc=1
exit $rc
