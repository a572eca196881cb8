"""Canonical JSON and the hashes built on it: equal settings give equal text, hence equal keys."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, ASCII only, no NaN (a NaN setting is an error, not a key)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def stable_hash(obj: Any, length: int | None = 32) -> str:
    """sha256 hex digest of ``canonical_json(obj)``, cut to ``length`` characters (None: all 64)."""
    digest = hashlib.sha256(canonical_json(obj).encode()).hexdigest()
    return digest if length is None else digest[:length]
