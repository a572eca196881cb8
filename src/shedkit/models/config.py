"""Settings of the model layer as plain dataclasses (no torch here: the CLI builds its help
text and cache keys from them without importing the model stack).

Each field carries its help text in ``metadata["help"]`` (TRL-style), so a CLI can expose the
fields as flags without repeating the documentation.
"""

from __future__ import annotations

from pathlib import Path
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Sequence

from shedkit.util.hashing import canonical_json, stable_hash  # noqa: F401 - re-exported for the model layer

# Bump when a change in this package changes any number it produces (losses, scores,
# fine-tunes): every cache key includes it, so stale cache entries are never reused.
MODEL_LAYER_VERSION = "3"  # 2: CPU batches padded to bucketed widths; 3: the head's row count too (scoring._head)

PRECISIONS = ("auto", "bf16", "fp32")
TEMPLATES = ("auto", "chat", "plain")
TRAIN_ON = ("all", "last")
# Encoding fields added later: left out of to_dict() at their defaults, so the cache keys of
# runs that do not use them are unchanged.
_ENCODE_DEFAULTS = {"train_on": "all", "chat_template": ""}
_TRAIN_ON_HELP = "Assistant turns that are targets: 'all' of them, or only the 'last' (earlier turns become context)."
_CHAT_TEMPLATE_HELP = "A Jinja chat template's text (the CLI reads --chat-template FILE), used instead of the tokenizer's."


def _encode_dict(obj) -> dict[str, Any]:
    return {k: v for k, v in asdict(obj).items() if not (k in _ENCODE_DEFAULTS and v == _ENCODE_DEFAULTS[k])}


def _f(default: Any, help: str, **kw) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass(frozen=True)
class TrainConfig:
    """How a model is fine-tuned on a subset (SHED proxies, LoBaSS reference, final fine-tune)."""

    method: str = _f("lora", "'lora' (peft LoRA adapters on a frozen base) or 'full' (every weight is trained).")
    epochs: float = _f(1.0, "Passes over the training rows; a fraction trains on that share of one pass.")
    lr: float = _f(2e-4, "Peak learning rate of AdamW (2e-4 suits LoRA; use ~2e-5 for full fine-tuning).")
    batch_size: int = _f(8, "Rows per optimiser step (before gradient accumulation).")
    grad_accum: int = _f(1, "Micro-batches accumulated into one optimiser step.")
    max_length: int = _f(512, "Tokens per row; longer rows lose prompt tokens first (from the left), then response tokens from the right.")
    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: float = _f(32.0, "LoRA scaling numerator (the update is scaled by alpha / r).")
    lora_dropout: float = _f(
        0.0,
        "Dropout on the LoRA input (seeded, so deterministic). Default 0: on CPU the dropout masks "
        "cost ~20% of a LoRA step (one mask per adapted module), for little gain on short fine-tunes.",
    )
    target_modules: str = _f(
        "all-linear",
        "Modules that get LoRA adapters: 'all-linear' (every linear layer but the output head) "
        "or a comma-separated list of module names, e.g. 'q_proj,v_proj'.",
    )
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    warmup_ratio: float = _f(0.0, "Share of the steps spent warming the learning rate up linearly from 0.")
    scheduler: str = _f("linear", "Learning-rate schedule after warm-up: 'linear' (decay to 0), 'cosine' or 'constant'.")
    max_grad_norm: float = _f(1.0, "Gradient-norm clipping threshold (0 disables clipping).")
    precision: str = _f("auto", "'auto' (bf16 autocast where the hardware runs it fast, else fp32), 'bf16' or 'fp32'.")
    template: str = _f("auto", "Prompt format: 'auto' (the tokenizer's chat template, else the plain template), 'chat' or 'plain'.")
    train_on: str = _f("all", _TRAIN_ON_HELP)
    chat_template: str = _f("", _CHAT_TEMPLATE_HELP)

    def __post_init__(self) -> None:
        problems = []
        if self.train_on not in TRAIN_ON:
            problems.append(f"train_on must be one of {TRAIN_ON}, not {self.train_on!r}")
        if self.method not in ("lora", "full"):
            problems.append(f"method must be 'lora' or 'full', not {self.method!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.template not in TEMPLATES:
            problems.append(f"template must be one of {TEMPLATES}, not {self.template!r}")
        if self.scheduler not in ("linear", "cosine", "constant"):
            problems.append(f"scheduler must be 'linear', 'cosine' or 'constant', not {self.scheduler!r}")
        for name in ("batch_size", "grad_accum", "max_length", "lora_r"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1")
        if self.epochs <= 0 or self.lr <= 0:
            problems.append("epochs and lr must be > 0")
        if not 0 <= self.lora_dropout < 1 or not 0 <= self.warmup_ratio < 1:
            problems.append("lora_dropout and warmup_ratio must be in [0, 1)")
        if problems:
            from shedkit.errors import ShedkitError

            raise ShedkitError("invalid training config: " + "; ".join(problems))

    def lora_targets(self) -> str | list[str]:
        if self.target_modules == "all-linear":
            return "all-linear"
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]

    def to_dict(self) -> dict[str, Any]:
        return _encode_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            from shedkit.errors import ShedkitError

            raise ShedkitError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class ScoreConfig:
    """How rows are scored (per-row losses, dev-set objectives)."""

    batch_size: int = _f(16, "Most rows in one scoring batch (batches are length-sorted, so padding is small).")
    max_batch_tokens: int = _f(8192, "Most tokens (rows x longest row) in one scoring batch; bounds memory.")
    max_length: int = _f(1024, "Tokens per row when scoring; longer rows lose prompt tokens first.")
    precision: str = _f("auto", "'auto' (bf16 autocast where the hardware runs it fast, else fp32), 'bf16' or 'fp32'.")
    template: str = _f("auto", "Prompt format: 'auto' (the tokenizer's chat template, else the plain template), 'chat' or 'plain'.")
    train_on: str = _f("all", _TRAIN_ON_HELP)
    chat_template: str = _f("", _CHAT_TEMPLATE_HELP)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS or self.template not in TEMPLATES or self.train_on not in TRAIN_ON:
            from shedkit.errors import ShedkitError

            raise ShedkitError(f"precision must be one of {PRECISIONS}, template one of {TEMPLATES} and train_on one of {TRAIN_ON}")
        if min(self.batch_size, self.max_batch_tokens, self.max_length) < 1:
            from shedkit.errors import ShedkitError

            raise ShedkitError("batch_size, max_batch_tokens and max_length must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return _encode_dict(self)

    def key_dict(self) -> dict[str, Any]:
        """The fields that change a score, for cache keys: batch sizes only group rows into
        forward passes (length-sorted, padding masked), so they are left out."""
        return {k: v for k, v in asdict(self).items() if k not in SCORE_LAYOUT_FIELDS}


# ScoreConfig fields that change how rows are batched, never a number: not in cache keys.
SCORE_LAYOUT_FIELDS = ("batch_size", "max_batch_tokens")

# Libraries whose version can change a fine-tune or a score (kernels, initialisation, peft's
# LoRA layers): every v(S) cache key names them.
KEYED_LIBRARIES = ("torch", "transformers", "peft")


def library_versions() -> dict[str, str | None]:
    """``{torch, transformers, peft}`` -> installed version (None when absent); no imports."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in KEYED_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def hub_revision(model_id: str, revision: str | None = None) -> str | None:
    """The commit a hub model id resolves to in the local Hugging Face cache (what an offline or
    online load of ``model_id`` at ``revision`` (default "main") reads), or None when it is not
    cached. A ``revision`` that already is a 40-hex commit is returned as is."""
    import re

    revision = revision or "main"
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    ref = Path(HF_HUB_CACHE) / ("models--" + model_id.replace("/", "--")) / "refs" / revision
    try:
        return ref.read_text().strip() or None
    except OSError:
        pass
    import os

    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1":
        return None
    try:  # not downloaded yet: ask the hub which commit a load will fetch
        from huggingface_hub import HfApi

        return HfApi().model_info(model_id, revision=revision, timeout=10).sha
    except Exception:  # noqa: BLE001 - no network, no such repo: the load itself will say why
        return None


def field_help(cls: type) -> list[tuple[str, Any, str]]:
    """``(name, default, help)`` for each field of a config dataclass: what a CLI exposes."""
    out = []
    for f in fields(cls):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name, default, f.metadata.get("help", "")))
    return out


def records_fingerprint(records: Sequence[Any]) -> str:
    """Content hash of a sequence of records (their ids, in order; an id hashes the turns)."""
    return stable_hash([r.id for r in records])
