#!/usr/bin/env bash
# device call 1: the host path's GPU tests (sigs checked), then the public-call A/B against the Python path and mamba-ssm
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site . || exit 1
REPO=$PWD
mkdir -p $OUT/r
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/r/gpu.txt
which ninja g++ | tee -a $OUT/r/gpu.txt
cd /tmp
export PYTHONUNBUFFERED=1
(SSMBENCH_CHECK_SIGS=1 PYTHONPATH=/tmp/site timeout 330 python3 -m pytest $REPO/tests/test_torch_host.py $REPO/tests/test_triton_scan.py $REPO/tests/test_torch_driver.py $REPO/tests/test_torch_launch.py -q -p no:cacheprovider -c /dev/null -rs 2>&1 | tail -25 | tee $OUT/r/pytest.txt)
(PYTHONPATH=/tmp/site:$REPO/scratch/mssm/build timeout 220 python3 $REPO/reports/benchmarks/h100-host/ab_host.py $REPO/scratch/mssm/py 512,2048 200 2>&1 | grep -v -i warn | tee $OUT/r/ab.txt)
tar czf $OUT/r.tgz -C $OUT r
