"""Build the CUDA extensions of the peers ssmbench is timed beside, from their source carried in
the ignored .peer/ (never committed):

    .peer/csrc/selective_scan/   mamba-ssm 2.3.2.post1's csrc/selective_scan (its Mamba-1 scan)
    .peer/csrc/causal_conv1d/    causal-conv1d 1.6.1's csrc (mamba-ssm's and transformers' conv kernels)
    .peer/causal_conv1d/         causal-conv1d 1.6.1's Python package

    python3 tools/build_peer_ext.py OUT_DIR [--arch 90]   # OUT_DIR/<module>.so; put OUT_DIR and .peer on PYTHONPATH

Each extension is compiled for one GPU architecture (the GPU's, or --arch where there is none;
their setup.py builds ten) with their setup.py's nvcc flags and compressed device code. The lent
GPU's 16 cores did not finish both in 330 s (2026-12-07), so they are built ahead here: on the
2-core VM, in a Python 3.12 venv with torch==2.11.0 (PyPI's wheel is the cu130 build, as the
device's) and CUDA_HOME=/usr/local/cuda-13.0, `--arch 90` took about 20 minutes for both and
gave 18 MB (`.peer/ext`, which then travels with `.peer`). A missing source folder is skipped
with a line saying so.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
    "--compress-mode=size",  # the device code compressed: 58 -> 12 MB for the selective scan, small enough to carry
]
EXTENSIONS = {  # the module name the peer imports: its source folder
    "selective_scan_cuda": "selective_scan",
    "causal_conv1d_cuda": "causal_conv1d",
}


def build(name: str, out_dir: str, arch: str) -> str:
    import torch
    from torch.utils.cpp_extension import load

    src = PEER / EXTENSIONS[name]
    if not src.is_dir():
        return f"{name}: skipped, no {src}"
    arch = arch or "".join(map(str, torch.cuda.get_device_capability()))
    sources = sorted(str(p) for p in src.iterdir() if p.suffix in (".cpp", ".cu"))
    work = os.path.join(out_dir, "build", name)
    os.makedirs(work, exist_ok=True)  # load() takes a lock file in it
    t = time.perf_counter()
    flags = [*NVCC, f"-gencode=arch=compute_{arch},code=sm_{arch}"]
    load(name, sources, extra_cflags=["-O3", "-std=c++17"], extra_cuda_cflags=flags, build_directory=work, verbose=False)
    shutil.copy(os.path.join(work, f"{name}.so"), out_dir)
    return f"{name}: built in {time.perf_counter() - t:.0f} s ({len(sources)} files, sm_{arch})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--arch", default="", help="compute capability without the dot (90: H100, H200); default: this GPU's")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 8))
    with ProcessPoolExecutor(len(EXTENSIONS)) as pool:
        jobs = {name: pool.submit(build, name, args.out_dir, args.arch) for name in EXTENSIONS}
        for name, job in jobs.items():
            try:
                print(job.result(), flush=True)
            except Exception as e:  # one failing leaves the other
                print(f"{name}: failed: {str(e).strip().splitlines()[-1][:300]}", flush=True)


if __name__ == "__main__":
    main()
