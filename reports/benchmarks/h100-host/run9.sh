#!/usr/bin/env bash
# device call 9: the host and driver tests after the last read's mends
set -uo pipefail
REPO=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site . || exit 1
mkdir -p $OUT/r
cd /tmp && SSMBENCH_CHECK_SIGS=1 PYTHONPATH=/tmp/site timeout 200 python3 -m pytest $REPO/tests/test_torch_host.py $REPO/tests/test_torch_driver.py -q -p no:cacheprovider -c /dev/null -rs > $OUT/r/pytest-mends.txt 2>&1
tail -3 $OUT/r/pytest-mends.txt
