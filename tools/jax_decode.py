"""Where a JAX decode step's time goes: one Mamba-1 model, one way of stepping it, one JSON line.

    python tools/jax_decode.py VARIANT[+cast][+fused][+reuse|+slot][+cblog][@nocb|@cball]

VARIANT
  step       each step synced, as the harness times it: median, p10, p90 ms over 400 steps, and
             how many distinct buffers the logits were written to
  async      400 steps enqueued back to back, one sync: ms a step when the host runs ahead
  loop       128 steps in one jitted fori_loop (the argmax fed back): the device's time alone,
             no dispatch between steps
  dispatch   the step's arguments through a jitted no-op (donating the state as the step does):
             what one call costs the host before any kernel runs
  hlo        the compiled step's op counts (fusions, custom calls, dots, copies); the HLO is
             written to $OUT/<variant>.txt
MODIFIERS
  +cast      the backend's decode copy (weights cast once); without it the step reads the fp32
             parameters (stacked for +fused, as the fused step reads them) and casts them every token
  +fused     the backend's fused decode kernels (``fused_decode``); without it XLA's step
  +reuse     step and async: each call donates the last call's logits, so its output buffer is the
             same every call (is the host's cost XLA updating its command buffers for a new one?)
  +slot      the backend's ``logits_buffer`` as decode_step runs it: the step writes into a buffer of
             the model's and a second jitted call copies the logits into a buffer made before the
             step (the caller's stay theirs, as torch-cuda's decoder clones its graph's); +reuse is
             the same buffer without the copy.
             Every other variant runs the step without the buffer
  +cblog     step: XLA's command-buffer log (TF_CPP_VMODULE) during the timed steps, counted: command
             buffers run a step, re-recorded ("updated") a step, and the median cost of one update
  @nocb      XLA's command buffers (CUDA graphs) off; @cball: over every op type it can take;
             @skiptemp: the temporaries at fixed (VMM-reserved) addresses, so that a command buffer
             is updated only for a new parameter or output address; @cache4: four command buffers
             kept a step, one for each set of addresses that recurs (newer XLA only); @tempcolor:
             the temporaries from an allocator of their own (XLA's flag "for CUDA graphs")

Environment: BACKEND (jax-cuda), PRESET (mamba-130m), LAYERS (the preset's), DTYPE (bfloat16),
BATCH (1), PROMPT (16: the tokens prefilled before the steps). Each variant in its own process
(XLA_FLAGS are read at import): ``tools/device_run.sh jax-variants`` runs a list of them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time

FLAGS = {
    "nocb": "--xla_gpu_enable_command_buffer=",
    "cball": "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL --xla_gpu_graph_min_graph_size=1",
    "skiptemp": "--xla_gpu_command_buffer_update_mode=SKIP_TEMP",
    "cache4": "--xla_gpu_command_buffer_cache_size=4",
    "tempcolor": "--xla_gpu_temp_buffer_use_separate_color=true",
}
CB_LOG = re.compile(r"(Updated|Recorded|Initialized)[^\n]*? command buffer[^\n]*? in (\d+) ")  # XLA's command_buffer_thunk.cc, VLOG(3)
STEPS, LOOP = 400, 128
VARIANTS = ("step", "async", "loop", "dispatch", "hlo")


def _median_p10_p90(seconds) -> dict:
    import numpy as np

    ms = np.asarray(seconds) * 1e3
    return {"ms": float(np.median(ms)), "p10": float(np.percentile(ms, 10)), "p90": float(np.percentile(ms, 90))}


def _synced(fn, args, state_at: int) -> tuple[list[float], int]:
    """Seconds of each of STEPS calls of fn, synced, its returned state fed back; and how many
    distinct device buffers its first output (the logits) was written to."""
    import jax

    args, ts, buffers = list(args), [], set()
    for _ in range(STEPS):
        t = time.perf_counter()
        out = fn(*args)
        jax.block_until_ready(out)
        ts.append(time.perf_counter() - t)
        buffers.add(out[0].unsafe_buffer_pointer())
        args[state_at] = out[1]
    return ts, len(buffers)


def _cb_counts(text: str, steps: int) -> dict:
    """What XLA's command-buffer log says of ``steps`` synced steps: command buffers run and
    re-recorded a step, and the median microseconds one re-recording took."""
    import numpy as np

    updates = [int(us) for kind, us in CB_LOG.findall(text) if kind == "Updated"]
    changed = re.findall(r"updated_allocs=(\d+)", text)  # how many buffers had moved, where this XLA says
    return {
        "cb_moved_buffers": {n: changed.count(n) for n in sorted(set(changed))},
        "cb_runs_per_step": text.count("Execute command buffer") / steps,
        "cb_updates_per_step": len(updates) / steps,
        "cb_update_us": float(np.median(updates)) if updates else 0.0,
        "cb_log_lines": text.count("\n"),  # 0: the log was not on (another jaxlib's module name?)
    }


def main(spec: str) -> dict:
    variant, _, cb = spec.partition("@")
    variant, *mods = variant.split("+")
    if variant not in VARIANTS:  # before the model is built and compiled
        raise SystemExit(f"unknown variant {variant!r}: {', '.join(VARIANTS)}")
    if "cblog" in mods:  # read when jaxlib loads
        os.environ.update(TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="command_buffer_thunk=3")
    if cb:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FLAGS[cb]}".strip()
    import jax
    import jax.numpy as jnp
    import numpy as np
    from ssmbench.backends.jax.layers import STACKED, decode_weights

    from ssmbench import backends
    from ssmbench.presets import PRESETS
    from ssmbench.weights import init_weights

    b = backends.get(os.environ.get("BACKEND", "jax-cuda"))
    cfg = PRESETS[os.environ.get("PRESET", "mamba-130m")].model
    if os.environ.get("LAYERS"):
        cfg = dataclasses.replace(cfg, n_layers=int(os.environ["LAYERS"]))
    m = b.build("mamba", init_weights("mamba", cfg, seed=0), cfg, dtype=os.environ.get("DTYPE", "bfloat16"))
    m.fused_decode, m.logits_buffer = "fused" in mods, "reuse" in mods or "slot" in mods  # the step takes a logits buffer
    if "cast" not in mods:  # the fp32 weights as they are (stacked, for the fused step)
        stack = cfg.n_layers if any(k.startswith(STACKED) for k in m.decode_params()) else 0
        plain = decode_weights(m.params, m.net.LINEAR, m.net.EMBEDDING, jnp.float32, stack)
        m.decode_params = lambda: plain
    batch = int(os.environ.get("BATCH", "1"))
    prompt = int(os.environ.get("PROMPT", "16"))
    state = b.prefill(m, b.tokens(np.random.default_rng(0).integers(0, cfg.vocab, (batch, prompt))), prompt + 1)
    tok, fn, p = b.tokens(np.zeros((batch,), np.int32)), m.jitted("step"), m.decode_params()
    out = {"variant": spec, "device": b.device.device_kind, "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")}

    if variant == "hlo":
        text = fn.lower(p, tok, state).compile().as_text()
        with open(os.path.join(os.environ.get("OUT", "/tmp"), re.sub(r"[+@]", "_", spec) + ".txt"), "w") as f:
            f.write(text)
        entry = text[text.find("ENTRY") :]
        for op in ("fusion", "custom-call", "dot", "copy"):
            out[op] = len(re.findall(rf"^\s*%\S+ = [^=]*? {op}\(", entry, re.M))  # a tuple's type has spaces
        out["custom_call_targets"] = sorted(set(re.findall(r'custom_call_target="([^"]+)"', text)))
        return out
    if variant == "dispatch":
        fn = jax.jit(lambda p, t, s: (t + 1, s), donate_argnums=(2,))
    slots = set()  # +slot: the addresses the step's own logits buffer had
    if "slot" in mods:  # the backend's decode_step: the step's own buffer, a copy returned

        def fn(p, t, s):
            got = m.step(t, s)
            slots.add(m._logits[batch].unsafe_buffer_pointer())
            return got

    elif "reuse" in mods:  # the last logits donated back, so that every call writes them to one buffer
        step, last = fn, [jnp.zeros((batch, len(p[m.net.EMBEDDING])), jnp.float32)]

        def fn(p, t, s):
            last[0], s = step(p, t, s, last[0])
            return last[0], s

    if variant == "loop":
        kw = {"fused": True} if m.fused_decode else {}

        def steps(p, tok, state):
            def body(_, carry):
                logits, s = m.net.step(p, carry[0], carry[1], cfg=cfg, dtype=m.dtype, **kw)
                return jnp.argmax(logits, -1).astype(tok.dtype), s

            return jax.lax.fori_loop(0, LOOP, body, (tok, state))

        fn, reps = jax.jit(steps, donate_argnums=(2,)), []
        for _ in range(8):  # the first compiles
            t = time.perf_counter()
            tok, state = fn(p, tok, state)
            jax.block_until_ready(state)
            reps.append((time.perf_counter() - t) / LOOP)
        out["compile_s"] = reps[0] * LOOP
        return {**out, **_median_p10_p90(reps[1:])}
    for _ in range(20):  # warm: compiled, caches filled
        logits, state = fn(p, tok, state)
    jax.block_until_ready(state)
    if variant in ("step", "dispatch"):
        if "cblog" in mods:  # the log goes to fd 2 from C++: to a file while the timed steps run
            log, saved = os.path.join(os.environ.get("OUT", "/tmp"), re.sub(r"[+@]", "_", spec) + ".log"), os.dup(2)
            with open(log, "w") as f:
                sys.stderr.flush()
                os.dup2(f.fileno(), 2)
                try:
                    ts, buffers = _synced(fn, (p, tok, state), 2)
                finally:
                    os.dup2(saved, 2)
            with open(log) as f:
                out.update(_cb_counts(f.read(), STEPS))
        else:
            ts, buffers = _synced(fn, (p, tok, state), 2)
        if slots:
            out["slot_buffers"] = len(slots)
        return {**out, **_median_p10_p90(ts), "leaves": len(jax.tree_util.tree_leaves((p, tok, state))), "output_buffers": buffers}
    reps = []  # async
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(STEPS):
            logits, state = fn(p, tok, state)
        jax.block_until_ready(state)
        reps.append((time.perf_counter() - t) / STEPS)
    return {**out, **_median_p10_p90(reps)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
