"""Loss scoring and embedding sharded over Ray (a local instance with 2 worker processes) give
the sequential numbers bit for bit, and write the same cache the sequential run reads back."""

import numpy as np
import pytest

from shedkit.data.records import Turn, make_record

pytest.importorskip("ray", reason="ray is not installed (pip install 'shedkit[ray]')")


def rows(n):
    return [make_record(i, [Turn("user", f"Question {i}: " + "why? " * (i % 5)),
                            Turn("assistant", f"Answer {i} " + "because. " * (i % 7 + 1))], {"i": i})
            for i in range(n)]


@pytest.mark.slow
def test_ray_shards_match_sequential(tmp_path, one_torch_thread):
    from shedkit.embed import embed_records
    from shedkit.execute import RayBackend
    from shedkit.models import ScoreConfig, load_model
    from shedkit.models.losses import response_losses

    records = rows(16)
    config = ScoreConfig(precision="fp32", max_length=96)
    model, tok = load_model("tiny-random", device="cpu")
    seq_loss = response_losses(model, tok, records, config, ifd=True, shard_size=3, progress=False)
    seq_emb = embed_records(records, embedder="hashed-ngrams", shard_size=3, progress=False)
    with RayBackend(workers=2) as ray_backend:  # ray.init(num_cpus=2) on this machine
        ray_loss = response_losses("tiny-random", None, records, config, ifd=True, shard_size=3, device="cpu",
                                   backend=ray_backend, cache_dir=tmp_path, progress=False)
        stats = {}
        ray_emb = embed_records(records, embedder="hashed-ngrams", shard_size=3, backend=ray_backend,
                                cache_dir=tmp_path, progress=False, stats=stats)
    assert ray_loss.shards == 6 and stats["shards"] == 6
    for name in ("loss", "n_tokens", "loss_last", "loss_alone"):
        assert np.array_equal(getattr(ray_loss, name), getattr(seq_loss, name)), name
    assert np.array_equal(ray_emb, seq_emb)
    # what the Ray workers cached is what a sequential rerun serves, computing nothing
    again = response_losses("tiny-random", None, records, config, ifd=True, shard_size=3, device="cpu",
                            cache_dir=tmp_path, progress=False)
    assert again.shards == 0 and again.cached == 16 and np.array_equal(again.loss, seq_loss.loss)
    stats = {}
    assert np.array_equal(embed_records(records, embedder="hashed-ngrams", cache_dir=tmp_path, progress=False,
                                        stats=stats), seq_emb)
    assert stats["computed"] == 0
