#!/usr/bin/env bash
# Run on a lent GPU machine (no internet): install ssmbench from carried wheels, then run the
# steps named, each writing under $OUT. From the repository root:
#
#   bash tools/device_run.sh tests compile scan-suite      # carry .whl
#   bash tools/device_run.sh ab                            # carry .whl and .base
#
# .whl/ holds what the device's image lacks for Python 3.12 (typer 0.29.2 and pydantic 2.14.3,
# pydantic_core 2.50.4, annotated-types 0.8.0, typing-inspection 0.4.5: typer imports pydantic
# when its CLI runs). .base/ holds the commit to compare against, for `ab`:
#   git archive REV ssmbench backends suites pyproject.toml README.md | tar -x -C .base
# Steps: the case below. A step that cannot finish in one call (jax-cuda compiles for 15-50 s a
# point) continues in the next: copy the fetched results into an ignored folder, carry it, and set
# RESUME_FROM=that-folder (sweeps then run with --resume).
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
W=/tmp/work  # results and A/B folders; what comes back is $OUT, at most 8 files: they are tarred there
R="$W/results"
mkdir -p "$W"
save() { if [ -d "$R" ]; then tar czf "$OUT/results.tgz" -C "$W" results; fi; }  # many small files come back as one
trap 'save; exit 124' TERM  # after every step, and when a timeout cuts one: what was written comes back
if [ -n "${RESUME_FROM:-}" ]; then mkdir -p "$R" && cp "$REPO/$RESUME_FROM"/*.jsonl "$R/"; fi  # carried results, for --resume
FAST="--warmup 1 --min-iters 5 --min-time 0.3 --timeout 120"  # sweeps: many points, each in a fresh process
PYTEST="python3 -m pytest -q -p no:cacheprovider -c /dev/null -rs"
for STEP in "$@"; do
  echo "== $STEP $(date +%T)"
  case $STEP in
    tests) $PYTEST "$REPO/tests/backends/torch" "$REPO/tests/suites/test_scan_suite.py" "$REPO/tests/backends/test_backends.py" -k "not jax and not tf" > "$OUT/pytest.txt" 2>&1
           tail -3 "$OUT/pytest.txt" ;;
    tests-jax) $PYTEST "$REPO/tests/backends/jax" "$REPO/tests/backends/test_backends.py" -k "jax" > "$OUT/pytest-jax.txt" 2>&1
               tail -3 "$OUT/pytest-jax.txt" ;;
    tests-jax-decode) $PYTEST "$REPO/tests/backends/test_backends.py" -k "jax-cuda and (decode or half_precision)" > "$OUT/pytest-jax-decode.txt" 2>&1
                      tail -3 "$OUT/pytest-jax-decode.txt" ;;  # jax-cuda's decode step against float64
    tests-untied) $PYTEST "$REPO/tests/backends/test_backends.py" -k "untied and cuda" > "$OUT/pytest-untied.txt" 2>&1
                  tail -3 "$OUT/pytest-untied.txt" ;;  # a model with its own LM head, on both GPU backends
    compile) python3 "$REPO/tools/compile_triton.py" > "$OUT/compile.txt" 2>&1; echo "compile_triton exit $?"; tail -2 "$OUT/compile.txt" ;;
    scan-suite) $SSM run scan -b torch-cuda --preset mamba-130m --scan triton $FAST --out $R
                $SSM run scan -b torch-cuda --preset mamba-130m --scan triton --dtype bfloat16 $FAST --out $R ;;
    scan-suite-bf16) $SSM run scan -b torch-cuda --preset mamba-130m --scan triton --dtype bfloat16 $FAST --out $R ;;
    metrics) $SSM run throughput -b torch-cuda --preset tinyshakespeare-m2 --scan triton --dtype float32 --min-time 0.5 --out $R
             $SSM run throughput -b torch-cuda --preset tinyshakespeare-m2 --scan triton --dtype bfloat16 --min-time 0.5 --out $R
             $SSM run throughput -b torch-cuda --preset mamba-130m --scan triton --mode train --dtype bfloat16 --arch both --min-iters 5 --min-time 0.5 --out $R ;;
    decode) $SSM sweep seqlen -b torch-cuda --preset mamba-130m --values 1024,4096,16384 --mode decode --dtype bfloat16 --arch both $FAST --out $R ;;
    small) $SSM run throughput -b torch-cuda --preset tinyshakespeare-m2 --scan all --arch both --out $R
           $SSM run throughput -b torch-cuda --preset tinyshakespeare-m2 --scan all --arch both --dtype bfloat16 --out $R ;;
    latency) $SSM run latency -b torch-cuda --preset tinyshakespeare-m2 --arch both --mode decode --dtype bfloat16 --out $R
             $SSM run latency -b torch-cuda --preset mamba-130m --arch both --mode decode --dtype bfloat16 --out $R ;;
    parity) $SSM run parity -b torch-cuda,jax-cuda --arch both --out $R ;;
    jax-130m) $SSM run throughput -b jax-cuda --preset mamba-130m --arch both --dtype bfloat16 --timeout 150 --min-iters 5 --min-time 0.5 --out $R
              $SSM run latency -b jax-cuda --preset mamba-130m --arch both --mode decode --dtype bfloat16 --timeout 120 --out $R ;;
    seqlen-torch) $SSM sweep seqlen -b torch-cuda $FAST --out $R ;;
    seqlen-jax) $SSM sweep seqlen -b jax-cuda $FAST --out $R ${RESUME_FROM:+--resume} ;;
    depth-torch) $SSM run depth-scaling -b torch-cuda --preset tinyshakespeare-m2 $FAST --out $R ;;
    depth-jax) $SSM run depth-scaling -b jax-cuda --preset tinyshakespeare-m2 $FAST --out $R ;;
    ceiling-torch) $SSM run memory-ceiling -b torch-cuda --preset tinyshakespeare-m2 --memory-limit 12.7GB --timeout 120 --out $R ;;
    tune-scan) python3 "$REPO/tools/tune_triton_scan.py" --lengths 512,2048,8192 ${TUNE_ARGS:-} | tee "$OUT/tune.txt" ;;
    overhead) python3 "$REPO/tools/overhead.py" torch-cuda | tee "$OUT/overhead.txt" ;;
    ab)  # this tree against .base, in one call: the model-level figures, then the scan's ops (AB_ROUNDS rounds, interleaved)
         python3 -m pip install -q --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/base "$REPO/.base" || exit 1
         for v in base new; do
           PP=/tmp/site; [ $v = base ] && PP=/tmp/base:/tmp/site
           PYTHONPATH=$PP $SSM run throughput -b torch-cuda --preset mamba-130m --scan triton --mode train,forward --dtype bfloat16 --min-iters 5 --min-time 0.5 --timeout 200 --out "$W/ab-$v"
           PYTHONPATH=$PP $SSM sweep seqlen -b torch-cuda --preset mamba-130m --values 1024,16384 --mode decode --dtype bfloat16 --arch mamba $FAST --out "$W/ab-$v"
         done
         $SSM compare "$W/ab-base" "$W/ab-new" | tee "$OUT/ab-compare.txt"
         tar czf "$OUT/ab.tgz" -C "$W" ab-base ab-new
         for round in $(seq ${AB_ROUNDS:-2}); do
           for v in base new; do
             PP=/tmp/site; [ $v = base ] && PP=/tmp/base:/tmp/site
             PYTHONPATH=$PP python3 "$REPO/tools/scan_ab.py" --label $v --min-time ${AB_MIN_TIME:-0.3} >> "$OUT/scan-ab.jsonl" || echo "scan_ab $v failed"
           done
         done
         python3 "$REPO/tools/scan_ab.py" --compare "$OUT/scan-ab.jsonl" | tee "$OUT/scan-ab.txt" ;;
    tests-mamba2) $PYTEST "$REPO/tests/backends/torch/triton/test_triton_ssd.py" "$REPO/tests/backends/torch/triton/test_triton_fused.py" "$REPO/tests/backends/test_backends.py" -k "(mamba2 or ssd or gated) and not jax and not cpu" > "$OUT/pytest-mamba2.txt" 2>&1
                  tail -3 "$OUT/pytest-mamba2.txt" ;;
    tests-decode) $PYTEST "$REPO/tests/backends/torch/triton/test_triton_fused.py" "$REPO/tests/backends/test_backends.py" -k "(mamba2 or ssd_step or gated) and not jax and not cpu" > "$OUT/pytest-decode.txt" 2>&1
                  tail -3 "$OUT/pytest-decode.txt" ;;
    mamba2-decode) $SSM sweep seqlen -b torch-cuda --preset mamba2-130m --values 1024,16384 --mode decode --dtype bfloat16 $FAST --out $R
                   $SSM sweep seqlen -b torch-cuda --preset mamba-130m --values 1024,16384 --mode decode --dtype bfloat16 --arch mamba $FAST --out $R ;;
    peer-ssd) PYTHONPATH=/tmp/site:$REPO/.peer python3 "$REPO/tools/peer_mamba2.py" ssd | tee "$OUT/peer-ssd.jsonl" ;;  # carry .peer (mamba_ssm's source)
    peer-tune) PYTHONPATH=/tmp/site:$REPO/.peer python3 "$REPO/tools/peer_mamba2.py" tune ${TUNE_ARGS:-} | tee -a "$OUT/peer-tune.jsonl" ;;  # TUNE_ARGS may name a --module in .peer
    peer-ncu) PYTHONPATH=/tmp/site:$REPO/.peer ncu -k regex:"${NCU_KERNELS:-chunk_grad|state_grad}" --launch-count ${NCU_COUNT:-4} --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
                python3 "$REPO/tools/peer_mamba2.py" tune --lengths 2048 --candidates default > "$OUT/ncu.txt" 2>&1; echo "ncu exit $?"; grep -E "^  [a-z_]+kernel|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Compute \(SM\) Throughput|Memory Throughput" "$OUT/ncu.txt" ;;
    peer-host) PYTHONPATH=/tmp/site python3 "$REPO/tools/peer_mamba2.py" host --lengths 512,2048 | tee "$OUT/peer-host.jsonl" ;;
    peer-profile) PYTHONPATH=/tmp/site:$REPO/.peer python3 "$REPO/tools/peer_mamba2.py" profile --lengths 2048 | tee "$OUT/peer-profile.jsonl" ;;
    peer-lm) PYTHONPATH=/tmp/site:$REPO/.peer python3 "$REPO/tools/peer_mamba2.py" lm | tee "$OUT/peer-lm.jsonl" ;;
    mamba2) $SSM run throughput -b torch-cuda --preset mamba2-130m --mode train,forward --dtype bfloat16 --min-iters 5 --min-time 0.5 --timeout 200 --out $R
            $SSM sweep seqlen -b torch-cuda --preset mamba2-130m --values 1024,16384 --mode decode --dtype bfloat16 $FAST --out $R ;;
    mamba2-scan) $SSM run scan -b torch-cuda --preset mamba-130m --arch all --scan triton --dtype bfloat16 $FAST --out $R ${RESUME_FROM:+--resume} ;;
    mamba2-jax) $SSM run throughput -b jax-cuda --preset mamba2-130m --mode train --dtype bfloat16 --timeout 200 --min-iters 5 --min-time 0.5 --out $R ;;
    pallas-tune) python3 "$REPO/tools/tune_pallas_scan.py" ${TUNE_ARGS:-} | tee "$OUT/pallas-tune.jsonl" ;;  # the Pallas scan's tilings, alone
    pallas) $SSM run throughput -b jax-cuda --preset mamba-130m --arch mamba --scan pallas --mode train,forward --dtype bfloat16 --timeout 150 --min-iters 5 --min-time 0.5 --out $R ;;  # issue 24's fused JAX scan
    jax-torch) $SSM run throughput -b torch-cuda,jax-cuda --preset mamba-130m --arch mamba --mode train,forward --dtype bfloat16 --timeout 200 --min-iters 5 --min-time 0.5 --out $R ;;
    jax-torch-seed) $SSM run throughput -b torch-cuda,jax-cuda --preset tinyshakespeare-m2 --arch mamba --mode train,forward --timeout 120 --out $R ;;  # issue 24: seed 000's config
    decode-both) $SSM sweep seqlen -b torch-cuda,jax-cuda --preset mamba-130m --arch mamba --values ${DECODE_LENGTHS:-1024} --mode decode --dtype bfloat16 $FAST --out $R ;;  # issue 24's decode target, one call
    impls) P="/tmp/site:$REPO/.peer"  # carry .peer: mamba_ssm's source, whose Mamba-2 is pure Triton (its Mamba-1 needs a CUDA build)
           PYTHONPATH=$P $SSM sweep seqlen -b torch-cuda --preset mamba2-130m --impl ssmbench,hf,mamba-ssm --values 1024 --mode decode --dtype bfloat16 $FAST --out $R
           PYTHONPATH=$P $SSM run throughput -b torch-cuda --preset mamba2-130m --impl ssmbench,hf,mamba-ssm --mode forward,train --dtype bfloat16 --min-iters 5 --min-time 0.5 --timeout 150 --out $R ;;  # the cheap points first: the train points filled the first call
    impls-fallback)  # issue 25: without mamba_ssm importable, transformers runs its torch fallback
           $SSM run throughput -b torch-cuda --preset mamba-130m --arch mamba --impl ssmbench,hf --mode forward,decode,train --dtype bfloat16 --min-iters 3 --min-time 0.3 --timeout 90 --out $R
           $SSM run throughput -b torch-cuda --preset mamba2-130m --impl hf --mode forward,decode,train --dtype bfloat16 --min-iters 3 --min-time 0.3 --timeout 90 --out $R ;;
    peer-build) PATH=/tmp/site/bin:$PATH python3 "$REPO/tools/build_peer_ext.py" /tmp/peerext 2>&1 | tail -4 | tee "$OUT/peer-build.txt" ;;  # on the device (over 330 s for both): prefer .peer/ext, built ahead on the VM
    impls-built)  # issue 25 with the peers' CUDA extensions (.peer/ext, or peer-build's): mamba-ssm's default (fused) paths, transformers' kernel path
                  # (IMPL_PRESETS, IMPLS, IMPL_MODES, IMPL_TIMEOUT narrow it: transformers' first train step autotunes for over 90 s)
           P="/tmp/site:$REPO/.peer:$REPO/.peer/ext:/tmp/peerext"
           for preset in ${IMPL_PRESETS:-mamba-130m mamba2-130m}; do
             PYTHONPATH=$P $SSM run throughput -b torch-cuda --preset $preset --impl ${IMPLS:-ssmbench,hf,mamba-ssm} --mode ${IMPL_MODES:-forward,decode,train} --dtype bfloat16 --min-iters 3 --min-time 0.3 --timeout ${IMPL_TIMEOUT:-90} --out $R
           done ;;
    jax-variants) for v in ${JAX_VARIANTS:-step async loop dispatch}; do OUT=$OUT python3 "$REPO/tools/jax_decode.py" $v | tee -a "$OUT/jax-variants.jsonl"; done ;;  # issue 24: where jax-cuda's decode time goes, one process a variant
    jax-peer) python3 "$REPO/.peer/time_jax_peer.py" --scan both | tee "$OUT/jax-peer.jsonl" ;;  # issue 24's fairness table: a public JAX Mamba (vvvm23/mamba-jax) at 130M; carry .peer and .whl-peer (its wheels), never committed
    mamba2-both) $SSM run throughput -b torch-cuda,jax-cuda --preset mamba2-130m --mode train --dtype bfloat16 --timeout 240 --min-iters 5 --min-time 0.5 --out $R ;;  # issue 23's jax-cuda ratio, one call
    *) echo "unknown step $STEP" ;;
  esac
  save
done
if [ -d "$R" ]; then $SSM report $R > "$OUT/report.md"; fi
ls "$OUT"
