#!/usr/bin/env bash
# Run on a lent GPU machine (no internet): install ssmbench from carried wheels, check the CUDA
# numerics against the float64 reference, then benchmark torch-cuda. Results land in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/ssmbench-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site . || exit 1
REPO=$PWD
cd /tmp  # run the installed package, not the source tree (whose ssmbench/ has no backends/ inside)
SSM="python3 -m ssmbench"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu --format=csv
$SSM backends
R="$OUT/results"
if [ -n "${RESUME_FROM:-}" ]; then mkdir -p "$R" && cp "$REPO/$RESUME_FROM"/*.jsonl "$R/"; fi  # carried results, for --resume
FAST="--warmup 1 --min-iters 5 --min-time 0.3 --timeout 120"  # sweeps: many points, each in a fresh process
for STEP in "$@"; do
  case $STEP in
    small) $SSM run throughput -b torch-cuda --preset tinyshakespeare-m2 --scan all --arch both --out $R
           $SSM run throughput -b torch-cuda --preset tinyshakespeare-m2 --scan all --arch both --dtype bfloat16 --out $R ;;
    latency) $SSM run latency -b torch-cuda --preset tinyshakespeare-m2 --arch both --mode decode --dtype bfloat16 --out $R
             $SSM run latency -b torch-cuda --preset mamba-130m --arch both --mode decode --dtype bfloat16 --out $R ;;
    tests) python3 -m pytest "$REPO/tests/test_triton_scan.py" "$REPO/tests/test_triton_fused.py" "$REPO/tests/test_torch_numerics.py" "$REPO/tests/test_model_numerics.py" "$REPO/tests/test_jax_backend.py" -q -p no:cacheprovider -c /dev/null -rs > "$OUT/pytest.txt" 2>&1
           tail -3 "$OUT/pytest.txt" ;;
    tests-torch) SSMBENCH_CHECK_SIGS=1 python3 -m pytest "$REPO/tests/test_triton_scan.py" "$REPO/tests/test_triton_fused.py" "$REPO/tests/test_torch_launch.py" "$REPO/tests/test_torch_driver.py" "$REPO/tests/test_torch_host.py" "$REPO/tests/test_head_loss.py" "$REPO/tests/test_torch_numerics.py" "$REPO/tests/test_torch_graphs.py" "$REPO/tests/test_model_numerics.py" -q -p no:cacheprovider -c /dev/null -rs > "$OUT/pytest.txt" 2>&1
           tail -3 "$OUT/pytest.txt" ;;
    triton) $SSM run throughput -b torch-cuda --preset tinyshakespeare-m2 --scan triton,parallel --mode train,forward --out $R
            $SSM run throughput -b torch-cuda --preset tinyshakespeare-m2 --scan triton,parallel --mode train,forward --dtype bfloat16 --out $R
            $SSM run throughput -b torch-cuda --preset mamba-130m --scan triton --mode train,forward --dtype bfloat16 --timeout 300 --min-iters 5 --out $R ;;
    parity) $SSM run parity -b torch-cuda,jax-cuda --arch both --out $R ;;
    jax-small) $SSM run throughput -b torch-cuda,jax-cuda --preset tinyshakespeare-m2 --scan all --arch both --out $R ;;
    jax-130m) $SSM run throughput -b jax-cuda --preset mamba-130m --arch both --dtype bfloat16 --timeout 150 --min-iters 5 --min-time 0.5 --out $R
              $SSM run latency -b jax-cuda --preset mamba-130m --arch both --mode decode --dtype bfloat16 --timeout 120 --out $R ;;
    scan-suite) $SSM run scan -b torch-cuda --preset mamba-130m --scan triton $FAST --out $R
                $SSM run scan -b torch-cuda --preset mamba-130m --scan triton --dtype bfloat16 $FAST --out $R ;;
    metrics) $SSM run throughput -b torch-cuda --preset tinyshakespeare-m2 --scan triton --dtype float32 --min-time 0.5 --out $R
             $SSM run throughput -b torch-cuda --preset tinyshakespeare-m2 --scan triton --dtype bfloat16 --min-time 0.5 --out $R
             $SSM run throughput -b torch-cuda --preset mamba-130m --scan triton --mode train --dtype bfloat16 --arch both --min-iters 5 --min-time 0.5 --out $R ;;
    decode) $SSM sweep seqlen -b torch-cuda --preset mamba-130m --values 1024,4096,16384 --mode decode --dtype bfloat16 --arch both $FAST --out $R ;;
    parity-torch) $SSM run parity -b torch-cuda --arch both --out $R ;;
    tune-scan) python3 "$REPO/benchmarks/tune_triton_scan.py" --lengths 512,2048,8192 ${TUNE_ARGS:-} | tee "$OUT/tune.txt" ;;
    overhead) python3 "$REPO/benchmarks/overhead.py" torch-cuda | tee "$OUT/overhead.txt" ;;
    scan-host) python3 "$REPO/benchmarks/scan_host_time.py" | tee "$OUT/scan-host.txt" ;;
    launch-ab) for how in "" --triton-launch; do  # the scan eager and GPU-alone, direct launches vs Triton's
                 python3 "$REPO/benchmarks/tune_triton_scan.py" --defaults --lengths 512,2048,8192 $how | tee "$OUT/tune${how:+-triton-launch}.txt"
               done ;;
    seqlen-torch) $SSM sweep seqlen -b torch-cuda $FAST --out $R ;;
    seqlen-fused) $SSM sweep seqlen -b torch-cuda --mode train,forward $FAST --out $R ;;
    seqlen-jax) $SSM sweep seqlen -b jax-cuda $FAST --out $R ${RESUME_FROM:+--resume} ;;
    depth-torch) $SSM run depth-scaling -b torch-cuda --preset tinyshakespeare-m2 $FAST --out $R ;;
    depth-jax) $SSM run depth-scaling -b jax-cuda --preset tinyshakespeare-m2 $FAST --out $R ;;
    ceiling-torch) $SSM run memory-ceiling -b torch-cuda --preset tinyshakespeare-m2 --memory-limit 12.7GB --timeout 120 --out $R ;;
    130m) $SSM run throughput -b torch-cuda --preset mamba-130m --arch both --scan chunked,parallel --dtype bfloat16 --timeout 300 --min-iters 5 --out $R ;;
  esac
done
tar czf "$OUT/results.tgz" -C "$OUT" results 2>/dev/null  # many small files come back as one
$SSM report $R > "$OUT/report.md"  # plots are drawn here, from the fetched results (no matplotlib there)
grep -A40 -E "^\*\*(Depth|Sequence)" "$OUT/report.md" | grep -v "^$" | head -80
