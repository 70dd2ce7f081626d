#!/usr/bin/env bash
# device call 5: a native backtrace of add_pass's crash on refusal
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site . || exit 1
REPO=$PWD
mkdir -p $OUT/r
cd /tmp
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
gcc -shared -fPIC -o /tmp/segv.so $REPO/scratch/host/segv.c
python3 -c "from ssmbench.backends import torch_host; print(torch_host.available())"
SO=$(ls ~/.cache/torch_extensions/*/ssmbench_host/ssmbench_host.so | head -1)
LD_PRELOAD=/tmp/segv.so timeout 60 python3 $REPO/scratch/host/asan.py plain $REPO/tests $SO > $OUT/r/bt.txt 2>&1
cat $OUT/r/bt.txt | grep -v -i warn | c++filt | head -40
tar czf $OUT/r.tgz -C $OUT r
