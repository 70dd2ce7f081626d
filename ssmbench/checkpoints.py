"""Real models on disk, for ``--model PATH`` and ``ssmbench.load_weights``: a checkpoint folder in
mamba-ssm's or Hugging Face's format, or a bare weights file, read as ssmbench's state dict (its
names are mamba-ssm's, SPEC "The model") and the architecture's config.

    mamba-ssm  config.json with d_model, n_layer, vocab_size (padded up to pad_vocab_size_multiple),
               ssm_cfg ({"layer": "Mamba2", d_state, headdim, ngroups, ...} for Mamba-2);
               model.safetensors or pytorch_model.bin under ssmbench's own names
    hf         config.json with model_type mamba or mamba2 and transformers' names (hidden_size,
               num_hidden_layers, state_size, conv_kernel, expand, time_step_rank; head_dim,
               n_groups, chunk_size); model.safetensors, sharded with model.safetensors.index.json
               or not, or pytorch_model.bin; its ``backbone.embeddings.weight`` is our
               ``backbone.embedding.weight``, every other name is the same
    weights    a .safetensors, .npz, .pt or .bin file: the config inferred from the shapes

``open_checkpoint`` reads the config and checks every weight's name and shape against it without
loading the tensors (safetensors: from the file's header, which also shows a truncated file), so
a bad checkpoint is refused before any point runs; ``Checkpoint.load`` reads the tensors. An
``lm_head.weight`` that is a copy of the embedding is a tied head saved twice and is dropped; any
other is an untied head, which the model multiplies by instead (configs cannot tell: transformers'
Mamba2Config says untied by default, and its models converted from mamba-ssm's save the tied head
as its own tensor). What the model code cannot represent yet (Mamba-3, attention or MLP layers,
LayerNorm, biases) is refused by name.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from . import archs
from .weights import LM_HEAD, drop_tied_head, load_weights

SAFETENSORS, SHARDED, TORCH = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"
HF_NAMES = {"backbone.embeddings.weight": "backbone.embedding.weight"}  # Hugging Face's -> ours


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as a supported model; the message names the file."""


@dataclass(frozen=True)
class Checkpoint:
    path: str  # the folder or file given, resolved
    format: str  # "mamba-ssm", "hf" or "weights"
    arch: str  # ssmbench's architecture name
    config: dict  # the architecture's config
    files: tuple  # the weight files, in reading order
    sha256: str  # of the weight files' bytes, in order

    def source(self) -> dict:
        """What records carry as ``model_source``."""
        return {"path": self.path, "format": self.format, "sha256": self.sha256}

    def load(self) -> dict:
        """The weights as float32 NumPy arrays under ssmbench's names (a tied head dropped, whichever
        shard holds it)."""
        w = {}
        for f in self.files:
            w.update(load_weights(f))
        if self.format == "hf":
            w = {HF_NAMES.get(k, k): v for k, v in w.items()}
        return drop_tied_head(w)


def open_checkpoint(path) -> Checkpoint:
    """Read and check ``path`` (module docstring); CheckpointError names what is wrong."""
    p = Path(path).expanduser()
    if not p.exists():
        hub = "" if str(path).startswith((".", "/", "~")) or str(path).count("/") != 1 else (
            "; ssmbench does not download models: fetch it first (e.g. `huggingface-cli download "
            f"{path} --local-dir DIR`) and pass the folder"
        )  # fmt: skip
        raise CheckpointError(f"--model {path}: no such file or folder{hub}")
    p = p.resolve()
    if p.is_file():
        try:
            weights = load_weights(p)
            arch, cfg = archs.infer(weights)
        except Exception as e:  # noqa: BLE001 - any unreadable file is bad input, named
            raise CheckpointError(f"{p}: {_first_line(e)}") from None
        _check_head({k: v.shape for k, v in weights.items()}, p)
        return Checkpoint(str(p), "weights", arch, cfg.to_dict(), (str(p),), _sha256([p]))
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{p}: no config.json (a checkpoint folder needs one; or pass the weights file itself)")
    try:
        raw = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{cfg_file}: not readable as JSON ({_first_line(e)})") from None
    if not isinstance(raw, dict) or not ("model_type" in raw or ("d_model" in raw and "n_layer" in raw)):
        raise CheckpointError(f"{cfg_file}: neither mamba-ssm's config (d_model, n_layer) nor Hugging Face's (model_type)")
    fmt = "hf" if "model_type" in raw else "mamba-ssm"
    try:
        arch, cfg = (_hf_config if fmt == "hf" else _mamba_ssm_config)(raw, cfg_file)
    except KeyError as e:
        raise CheckpointError(f"{cfg_file}: no {e.args[0]!r}, which a {fmt} config needs") from None
    except (TypeError, AttributeError) as e:
        raise CheckpointError(f"{cfg_file}: {_first_line(e)}") from None
    files = _weight_files(p)
    _check_shapes(files, fmt, arch, cfg)
    return Checkpoint(str(p), fmt, arch, cfg.to_dict(), tuple(str(f) for f in files), _sha256(files))


def load_any(path) -> dict:
    """``ssmbench.load_weights``: a weights file (weights.load_weights) or a checkpoint folder,
    as float32 arrays under ssmbench's names."""
    return open_checkpoint(path).load() if Path(path).is_dir() else load_weights(path)


def checkpoint_weights(source: dict) -> dict:
    """The weights of a point's ``model_source`` (a worker's), refused if the files changed since
    the run was planned."""
    ck = open_checkpoint(source["path"])
    if ck.sha256 != source["sha256"]:
        raise CheckpointError(
            f"{source['path']}: its weights changed since the run was planned (sha256 {ck.sha256[:12]}, planned {source['sha256'][:12]})"
        )
    return ck.load()


# ---------------------------------------------------------------------------- configs
def _config(arch: str, where: Path, **fields):
    try:
        return arch, archs.config(arch, fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: {_first_line(e)}") from None


def _refuse(where: Path, checks: dict) -> None:
    """CheckpointError for the first of ``checks`` (what it is: whether the config has it) that holds."""
    for what, present in checks.items():
        if present:
            raise CheckpointError(f"{where}: {what} is not supported yet (ssmbench runs mamba-ssm's plain Mamba and Mamba-2 LMs)")


def _mamba_ssm_config(raw: dict, where: Path):
    ssm = raw.get("ssm_cfg") or {}
    layer = ssm.get("layer", "Mamba1")
    _refuse(
        where,
        {
            f"ssm_cfg layer {layer!r}": layer not in ("Mamba1", "Mamba2"),
            f"a hybrid with attention layers (attn_layer_idx {raw.get('attn_layer_idx')})": bool(raw.get("attn_layer_idx")),
            f"MLP blocks (d_intermediate {raw.get('d_intermediate')})": bool(raw.get("d_intermediate")),
            "LayerNorm (rms_norm false)": raw.get("rms_norm", True) is False,
            "projection biases (ssm_cfg bias true)": bool(ssm.get("bias")),
            "a conv without bias (ssm_cfg conv_bias false)": ssm.get("conv_bias", True) is False,
        },
    )
    pad = raw.get("pad_vocab_size_multiple", 8) or 1
    sizes = dict(vocab=-(-raw["vocab_size"] // pad) * pad, d_model=raw["d_model"], n_layers=raw["n_layer"])
    own = {k: ssm[k] for k in ("d_state", "d_conv", "expand") if k in ssm}
    if layer == "Mamba2":
        own |= {k: ssm[k] for k in ("headdim", "ngroups", "chunk_size") if k in ssm}
        return _config("mamba2", where, **sizes, **own)
    rank = ssm.get("dt_rank", "auto")
    return _config("mamba", where, **sizes, **own, dt_rank=0 if rank == "auto" else rank)


def _hf_config(raw: dict, where: Path):
    kind = raw["model_type"]
    if kind not in ("mamba", "mamba2"):
        raise CheckpointError(f"{where}: model_type {kind!r} is not supported (mamba, mamba2)")
    _refuse(
        where,
        {
            "projection biases (use_bias true)": bool(raw.get("use_bias")),
            "a conv without bias (use_conv_bias false)": raw.get("use_conv_bias", True) is False,
            "the norm before the gate (norm_before_gate true)": bool(raw.get("norm_before_gate")),
        },
    )
    sizes = dict(
        vocab=raw["vocab_size"],
        d_model=raw["hidden_size"],
        n_layers=raw["num_hidden_layers"],
        d_state=raw.get("state_size", 16 if kind == "mamba" else 128),
        d_conv=raw.get("conv_kernel", 4),
        expand=raw.get("expand", 2),
    )
    if kind == "mamba2":
        heads, hd = raw.get("num_heads"), raw.get("head_dim", 64)
        if heads is not None and heads * hd != sizes["expand"] * sizes["d_model"]:
            raise CheckpointError(
                f"{where}: num_heads {heads} x head_dim {hd} is not expand x hidden_size ({sizes['expand'] * sizes['d_model']})"
            )
        return _config("mamba2", where, **sizes, headdim=hd, ngroups=raw.get("n_groups", 1), chunk_size=raw.get("chunk_size", 256))
    rank = raw.get("time_step_rank", "auto")
    return _config("mamba", where, **sizes, dt_rank=0 if rank == "auto" else rank)


# ---------------------------------------------------------------------------- weights
def _weight_files(folder: Path) -> list[Path]:
    for index in (SHARDED, TORCH + ".index.json"):
        if (folder / index).is_file():
            try:
                shards = json.loads((folder / index).read_text())["weight_map"].values()
            except (OSError, ValueError, KeyError, AttributeError) as e:
                raise CheckpointError(f"{folder / index}: not a shard index ({_first_line(e)})") from None
            files = [folder / s for s in dict.fromkeys(shards)]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{folder / index} names shards that are missing: {', '.join(missing)}")
            return files
    for name in (SAFETENSORS, TORCH):
        if (folder / name).is_file():
            return [folder / name]
    raise CheckpointError(f"{folder}: no weights ({SAFETENSORS}, {SHARDED} or {TORCH})")


def _safetensors_shapes(f: Path) -> dict:
    """{name: shape} from a safetensors file's header, which also says how long its data is: a
    file shorter than that is truncated."""
    try:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        header.pop("__metadata__", None)
        end = max((v["data_offsets"][1] for v in header.values()), default=0)
    except (OSError, ValueError, struct.error, KeyError, TypeError) as e:
        raise CheckpointError(f"{f}: not a safetensors file ({_first_line(e)})") from None
    if f.stat().st_size < 8 + n + end:
        raise CheckpointError(f"{f}: truncated ({f.stat().st_size} bytes; its header describes {8 + n + end})")
    return {k: tuple(v["shape"]) for k, v in header.items()}


def _shapes(files: list[Path]) -> dict:
    out = {}
    for f in files:
        if f.suffix == ".safetensors":
            out.update(_safetensors_shapes(f))
        else:
            try:
                out.update({k: v.shape for k, v in load_weights(f).items()})
            except Exception as e:  # noqa: BLE001 - an unreadable file is bad input, named
                raise CheckpointError(f"{f}: {_first_line(e)}") from None
    return out


class _Shape:
    """An array's stand-in where only its shape is read (the configs' ``infer_config``)."""

    def __init__(self, shape):
        self.shape = tuple(shape)


TINY = {  # per architecture, a 1-wide config: its weights' names are any config's at the same depth
    "mamba": dict(vocab=2, d_model=2, d_state=1, d_conv=2, expand=1, dt_rank=1),
    "mamba2": dict(vocab=2, d_model=2, d_state=1, d_conv=2, expand=1, headdim=2, ngroups=1, chunk_size=1),
}


def _check_head(shapes: dict, where: Path) -> None:
    """An LM head saved beside the embedding must have its shape, (vocab, d_model)."""
    head, emb = shapes.get(LM_HEAD), shapes.get("backbone.embedding.weight")
    if head is not None and emb is not None and tuple(head) != tuple(emb):
        raise CheckpointError(f"{where}: {LM_HEAD} is {list(head)}, not the embedding's {list(emb)} (vocab, d_model)")


def _check_shapes(files: list[Path], fmt: str, arch: str, cfg) -> None:
    """The weights are exactly the config's: every name it implies and no other (an LM head of the
    embedding's shape aside), each layer shaped as the first, and the first layer's and the
    embedding's shapes giving config.json's sizes (read back by the architecture's
    ``infer_config``)."""
    got = {(HF_NAMES.get(k, k) if fmt == "hf" else k): s for k, s in _shapes(files).items()}
    where = files[0] if len(files) == 1 else files[0].parent
    _check_head(got, where)
    got.pop(LM_HEAD, None)  # tied or not: the layers' and the embedding's names are checked below
    module = archs.get(arch)
    want = set(module.init(archs.config(arch, {**TINY[arch], "n_layers": cfg.n_layers})))
    missing, extra = sorted(want - set(got)), sorted(set(got) - want)
    if missing or extra:
        names = missing or extra
        more = ", ..." if len(names) > 3 else ""
        raise CheckpointError(
            f"{where}: not a {cfg.n_layers}-layer {arch} model's weights "
            f"({'missing' if missing else 'unexpected'} {', '.join(names[:3])}{more})"
        )
    first = module.LAYERS + "0."
    for k, shape in got.items():
        if k.startswith(module.LAYERS):
            own = first + k[len(module.LAYERS) :].split(".", 1)[1]
            if tuple(shape) != tuple(got[own]):
                raise CheckpointError(f"{where}: {k} has shape {tuple(shape)}, layer 0's {tuple(got[own])}")
    extra_args = {"ngroups": cfg.ngroups, "chunk_size": cfg.chunk_size} if arch == "mamba2" else {}
    try:
        found = module.infer_config({k: _Shape(s) for k, s in got.items()}, **extra_args).to_dict()
    except ValueError as e:
        raise CheckpointError(f"{where}: {_first_line(e)}") from None
    if tuple(got["backbone.norm_f.weight"]) != (cfg.d_model,):
        found["d_model"] = got["backbone.norm_f.weight"][0]
    for field, value in cfg.to_dict().items():
        if found.get(field) != value:
            raise CheckpointError(f"{where}: the weights have {field} {found.get(field)}; config.json says {value}")


def _sha256(files) -> str:
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__
