import numpy as np

from shedkit.data.records import Turn, make_record
from shedkit.embed import embed_records
from shedkit.embed.api import embed_texts


def test_system_prompts_are_left_out_of_embeddings_unless_asked(tmp_path):
    system = Turn("system", "You are a helpful assistant. " * 30)
    rows = [make_record(i, [system, Turn("user", q), Turn("assistant", a)], {})
            for i, (q, a) in enumerate([("add two numbers", "four"), ("name a colour", "blue")])]
    plain = embed_records(rows, embedder="hashed-ngrams", cache_dir=tmp_path, progress=False)
    kept = embed_records(rows, embedder="hashed-ngrams", cache_dir=tmp_path, progress=False, include_system=True)
    expect = embed_texts(["add two numbers\nfour", "name a colour\nblue"], embedder="hashed-ngrams", progress=False)
    np.testing.assert_allclose(plain, expect, atol=1e-6)  # the cache did not serve the other variant
    assert float(plain[0] @ plain[1]) < 0.2 < float(kept[0] @ kept[1])  # the shared prompt pulls rows together
    again = embed_records(rows, embedder="hashed-ngrams", cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again, plain)
