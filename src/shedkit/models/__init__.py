"""The model layer: load models, fine-tune them, score rows and dev sets.

One implementation shared by SHED's value function, LoBaSS and the evaluation tools.
``shedkit.models.finetune`` is the module (import the function with
``from shedkit.models.finetune import finetune``): a package attribute cannot be both, and
Python rebinds it to the module whenever the submodule is imported. Importing this package is cheap: torch and transformers load when a function that needs them
is first used (``TrainConfig``/``ScoreConfig`` never need them).

    load_model(spec, dtype="float32", device=None, trust_remote_code=False)  -> (model, tokenizer)
    finetune.finetune(model, tokenizer, records, config, seed)                -> FineTuneResult
    response_losses(model, tokenizer, records, config, ifd=..., cache_dir=...) -> LossResult
    evaluate(model, tokenizer, dev, objective)                                -> ObjectiveResult
    finetune_and_score(model_spec, train_records, dev, train_config, objective, seed) -> float
    config_hash(model_spec, train_config, objective, dev, seed)               -> str
"""

from __future__ import annotations

from shedkit.util.registry import lazy_attributes

from shedkit.models.config import ScoreConfig, TrainConfig, field_help

_LAZY = {
    "load_model": "loading", "model_identity": "loading", "shared_model": "loading", "cache_root": "loading",
    "smollm2_gguf_path": "loading", "ALIASES": "loading",
    "tiny_random_model": "tiny", "byte_tokenizer": "tiny",
    "resolve_precision": "device", "resolve_device": "device", "autocast": "device",
    "Encoded": "encode", "encode_record": "encode", "encode_continuation": "encode", "render": "encode",
    "token_logprobs": "scoring",
    "LossResult": "losses", "response_losses": "losses", "model_fingerprint": "losses",
    "FineTuneResult": "finetune", "TrainStats": "finetune", "finetuned": "finetune",
    "save_finetuned": "finetune",
    "DevSet": "objectives", "MCItem": "objectives", "Objective": "objectives", "ObjectiveResult": "objectives",
    "read_dev": "objectives", "evaluate": "objectives", "mc_accuracy": "objectives", "dev_loss": "objectives",
    "mc_loglikelihoods": "objectives", "OBJECTIVES": "objectives",
    "finetune_and_score": "value_fn", "finetune_and_score_details": "value_fn", "config_hash": "value_fn",
    "SubsetScore": "value_fn",
}

__all__ = ["ScoreConfig", "TrainConfig", "field_help", *sorted(_LAZY)]


__getattr__ = lazy_attributes(__name__, _LAZY)
