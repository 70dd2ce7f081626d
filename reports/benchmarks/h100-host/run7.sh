#!/usr/bin/env bash
# device call 7: the host tests on the final code; the scan suite (fp32, bf16) and 130M bf16 training as users run them
set -uo pipefail
REPO=$PWD
mkdir -p $OUT/r
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site . || exit 1
(cd /tmp && SSMBENCH_CHECK_SIGS=1 PYTHONPATH=/tmp/site timeout 120 python3 -m pytest $REPO/tests/test_torch_host.py -q -p no:cacheprovider -c /dev/null -rs > $OUT/r/pytest-host.txt 2>&1; tail -3 $OUT/r/pytest-host.txt)
OUT=$OUT/r timeout 420 bash benchmarks/device_run.sh scan-suite metrics > $OUT/r/suite.log 2>&1
tail -5 $OUT/r/suite.log
tar czf $OUT/r.tgz -C $OUT r
