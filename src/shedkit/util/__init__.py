"""Small helpers every stage shares (no torch, no heavy imports at module level).

- :mod:`shedkit.util.atomic`   -- temp file + rename writes (bytes, text, JSON, ``.npy``)
- :mod:`shedkit.util.registry` -- name lookup with "did you mean" on a typo
- :mod:`shedkit.util.progress` -- the one progress bar (rich, on stderr, with ETA)
- :mod:`shedkit.util.hashing`  -- canonical JSON and the stable hashes built on it
- :mod:`shedkit.util.defaults` -- default model and embedder names, named once
"""
