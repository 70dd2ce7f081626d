"""Build the CUDA extensions of the peers ssmbench is timed beside, on the lent GPU, from their
source carried in the ignored .peer/ (never committed):

    .peer/csrc/selective_scan/   mamba-ssm 2.3.2.post1's csrc/selective_scan (its Mamba-1 scan)
    .peer/csrc/causal_conv1d/    causal-conv1d 1.6.1's csrc (mamba-ssm's and transformers' conv kernels)
    .peer/causal_conv1d/         causal-conv1d 1.6.1's Python package

    python3 tools/build_peer_ext.py BUILD_DIR      # then put BUILD_DIR and .peer on PYTHONPATH

Each extension is compiled for this GPU's architecture only (their setup.py builds ten), with
their setup.py's nvcc flags, the two in parallel processes (ninja runs each one's files in
parallel). A missing source folder is skipped with a line saying so.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

PEER = Path(__file__).resolve().parent.parent / ".peer" / "csrc"
NVCC = [
    "-O3",
    "-std=c++17",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__",
    "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr",
    "--expt-extended-lambda",
    "--use_fast_math",
]
EXTENSIONS = {  # the module name the peer imports: its source folder
    "selective_scan_cuda": "selective_scan",
    "causal_conv1d_cuda": "causal_conv1d",
}


def build(name: str, build_dir: str) -> str:
    import torch
    from torch.utils.cpp_extension import load

    src = PEER / EXTENSIONS[name]
    if not src.is_dir():
        return f"{name}: skipped, no {src}"
    major, minor = torch.cuda.get_device_capability()
    arch = f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}"
    sources = sorted(str(p) for p in src.iterdir() if p.suffix in (".cpp", ".cu"))
    os.makedirs(build_dir, exist_ok=True)  # load() takes a lock file in it
    t = time.perf_counter()
    load(name, sources, extra_cflags=["-O3", "-std=c++17"], extra_cuda_cflags=[*NVCC, arch], build_directory=build_dir, verbose=False)
    return f"{name}: built in {time.perf_counter() - t:.0f} s ({len(sources)} files, sm_{major}{minor})"


def main() -> None:
    build_dir = sys.argv[1]
    os.makedirs(build_dir, exist_ok=True)
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 8))
    with ProcessPoolExecutor(len(EXTENSIONS)) as pool:
        jobs = {name: pool.submit(build, name, os.path.join(build_dir, name)) for name in EXTENSIONS}
        for name, job in jobs.items():
            try:
                print(job.result(), flush=True)
            except Exception as e:  # one failing leaves the other
                print(f"{name}: failed: {str(e).strip().splitlines()[-1][:300]}", flush=True)


if __name__ == "__main__":
    main()
