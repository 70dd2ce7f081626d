#!/usr/bin/env bash
# device call 6: every torch GPU test (sigs checked), then the public-call A/B at 512, 2048, 8192
set -uo pipefail
REPO=$PWD
mkdir -p $OUT/r
OUT=$OUT/r timeout 400 bash benchmarks/device_run.sh tests-torch > /dev/null 2>&1
grep -E "passed|failed|FAILED|Error|Fatal" $OUT/r/pytest.txt | tail -12
cd /tmp
(PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$REPO/scratch/mssm/build timeout 170 python3 $REPO/reports/benchmarks/h100-host/ab_host.py $REPO/scratch/mssm/py 512,2048,8192 300 2>&1 | grep -v -i warn > $OUT/r/ab.txt)
tail -3 $OUT/r/ab.txt
tar czf $OUT/r.tgz -C $OUT r
