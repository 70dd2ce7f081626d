#!/usr/bin/env bash
# device call 4: ASan on the add_pass refusal; CUDA-graph capture, host vs Python path, warm-ups on the default or side stream
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site . || exit 1
REPO=$PWD
mkdir -p $OUT/r
cd /tmp
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
for p in python host; do for w in default side; do timeout 60 python3 $REPO/scratch/host/graph_check.py $REPO/tests $p $w 2>&1 | grep -v -i warn | tail -2; done; done | tee $OUT/r/graph.txt
SO=$(python3 -c "import torch_host_probe" 2>/dev/null; ls ~/.cache/torch_extensions/*/ssmbench_host/ssmbench_host.so | head -1)
echo "plain build: $SO"
timeout 60 python3 $REPO/scratch/host/asan.py plain $REPO/tests $SO 2>&1 | tail -5 | tee $OUT/r/plain.txt
timeout 200 python3 $REPO/scratch/host/asan.py build /tmp/site/ssmbench/backends/torch_host.cpp 2>&1 | tail -3
ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD=$(gcc -print-file-name=libasan.so) timeout 100 python3 $REPO/scratch/host/asan.py asan $REPO/tests > $OUT/r/asan.txt 2>&1
grep -v "^    #[2-9][0-9]" $OUT/r/asan.txt | head -50
tar czf $OUT/r.tgz -C $OUT r
