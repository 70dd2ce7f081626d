# ruff: noqa: E402, E501, E702  (a debugging record, kept as it ran on the device)
import os
import sys

import torch
from torch.utils.cpp_extension import load

mode = sys.argv[1]
if mode == "build":
    os.makedirs("/tmp/asan", exist_ok=True)
    load(
        name="ssmbench_host",
        sources=[sys.argv[2]],
        is_python_module=False,
        build_directory="/tmp/asan",
        extra_cflags=["-O1", "-g", "-std=c++17", "-fsanitize=address", "-fno-omit-frame-pointer"],
        extra_ldflags=["-fsanitize=address"],
        verbose=False,
    )
    print("built", flush=True)
    sys.exit(0)
sys.path.insert(0, sys.argv[2])
torch.ops.load_library("/tmp/asan/ssmbench_host.so" if mode == "asan" else sys.argv[3])
from ssmbench.backends import torch_host

torch_host._state["loaded"] = True
import pytest
import test_torch_host as th

mp = pytest.MonkeyPatch()
tt = th.tt
mp.setattr(tt, "FORWARD", tt.Tiling(4, 4, 1, per_sm=12))
mp.setattr(tt, "BACKWARD", tt.Tiling(4, 4, 1, per_sm=12))
mp.setattr(tt, "_pdl", lambda d: True)
mp.setattr(tt, "_plans", {})
ins, fp, _ = th.planned()
fake = th.FakeLaunches()
blob = torch_host.encode(fp, fake.drivers(fp, 500), tt.INPUTS, fake.address, 0)
n_slots = 4 + sum(2 + len(shape) for shape, _, _ in fp.buffers) + 1 + 8
first_place = n_slots + blob[n_slots] + 3
print("blob", len(blob), "n_slots at", n_slots, "=", blob[n_slots], "place at", first_place, "=", blob[first_place], flush=True)
blob[first_place] = tt.INPUTS + len(fp.buffers) - 1
try:
    torch.ops.ssmbench_host.add_pass(blob)
    print("no error")
except RuntimeError as e:
    print("raised:", str(e).splitlines()[0], flush=True)
