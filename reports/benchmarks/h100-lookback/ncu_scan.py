import importlib
import sys

import torch

sys.path.insert(0, "/tmp/abpk")
tt = importlib.import_module("v_head.torch_triton")
B, L, E, N = 8, int(sys.argv[1]), 1536, 16
g = torch.Generator(device="cpu").manual_seed(0)
r = lambda *s, scale=1.0, shift=0.0: (torch.randn(*s, generator=g) * scale + shift).cuda()
lo = lambda t: t.to(torch.bfloat16)
ins = (
    lo(r(B, L, E)),
    lo(r(B, L, E, scale=0.5, shift=-1.0)),
    -torch.exp(r(E, N, scale=0.5)),
    lo(r(B, L, N)),
    lo(r(B, L, N)),
    r(E),
    lo(r(B, L, E)),
    r(E, scale=0.5),
)
for _ in range(4):
    tt.forward(*ins)
torch.cuda.synchronize()
