#!/usr/bin/env bash
# device call 8: the bf16 scan suite, then 130M bf16 training (its step a CUDA graph, captured through the host path)
set -uo pipefail
REPO=$PWD
mkdir -p $OUT/r/results
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
cd /tmp
FAST="--warmup 1 --min-iters 5 --min-time 0.3 --timeout 120"
timeout 360 python3 -m ssmbench run scan -b torch-cuda --preset mamba-130m --scan triton --dtype bfloat16 $FAST --out $OUT/r/results > $OUT/r/scan-bf16.log 2>&1
grep -E "mamba|attention" $OUT/r/scan-bf16.log | cut -c1-200 | head -20
timeout 200 python3 -m ssmbench run throughput -b torch-cuda --preset mamba-130m --scan triton --mode train --dtype bfloat16 --min-iters 5 --min-time 0.5 --out $OUT/r/results > $OUT/r/train-130m.log 2>&1
grep -E "mamba" $OUT/r/train-130m.log | cut -c1-260
tar czf $OUT/r.tgz -C $OUT r
