"""``normalize="less"`` first-order values (issue 23): the combination formula on vectors with
known answers (centring removes a shared component, lr weights, max/mean over tasks, scale
invariance), then FirstOrderValuation on the tiny model against a hand computation from the
cached checkpoints, Adam states and one backward per row; its caches, seeds and resumes."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import rec
from scipy.stats import spearmanr

from shedkit.models.config import TrainConfig
from shedkit.value.first_order import FirstOrderValuation, less_values

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- the formula, on vectors ------------------------------------------------------------------

def stats_of(U, T, mu=None):
    """less_values' arguments for one checkpoint from row vectors ``U`` [n, D], task targets
    ``T`` [K, D] and a centre (default: the mean row)."""
    mu = U.mean(0) if mu is None else mu
    return dict(task_dots=(U @ T.T)[None], norms2=(U ** 2).sum(1)[None], center_dots=(U @ mu)[None],
                center_norm2=np.array([mu @ mu]), center_task_dots=(T @ mu)[None])


def cos(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def along(a, t):
    """<a/|a|, t>: a target direction need not be a unit vector (a mean of unit gradients)."""
    return a @ t / np.linalg.norm(a)


def test_centring_removes_a_shared_component():
    """Rows = one shared direction s (every row's, as "end the answer" is) + a distinct part of
    norm r (short rows: small r). The target also holds s. Plain cosine ranks rows by r (the
    length proxy); centred on the pool's mean it ranks them by how their own part points at the
    target's, whatever r."""
    rng = np.random.default_rng(0)
    D, n = 600, 60
    s, d = np.linalg.qr(rng.normal(size=(D, 2)))[0].T  # orthonormal shared / target-specific directions
    r = np.exp(rng.uniform(np.log(0.1), np.log(10), size=n // 2)).repeat(2)
    c = rng.uniform(-0.5, 0.5, size=n // 2)
    c = np.stack([c, -c], 1).reshape(-1)  # paired: the pool's mean has no d component
    w = rng.normal(size=(n, D))
    w -= np.outer(w @ s, s) + np.outer(w @ d, d)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    U = s + r[:, None] * (c[:, None] * d + np.sqrt(1 - c ** 2)[:, None] * w)
    T = ((s + d) / np.sqrt(2))[None]
    plain, _ = less_values(**stats_of(U, T), weights=[1.0], center=False)
    centred, per_task = less_values(**stats_of(U, T), weights=[1.0], center=True)
    np.testing.assert_allclose(plain, [cos(u, T[0]) for u in U], rtol=1e-12)
    mu = U.mean(0)
    np.testing.assert_allclose(centred, [cos(u - mu, T[0]) for u in U], rtol=1e-9)
    np.testing.assert_array_equal(per_task[0], centred)
    assert spearmanr(plain, -r)[0] > 0.7  # plain cosine: the shorter, the better
    assert abs(spearmanr(centred, r)[0]) < 0.1  # centred: length plays no part
    assert spearmanr(centred, c)[0] > 0.95  # ... the row's own alignment does
    assert abs(spearmanr(plain, c)[0]) < spearmanr(centred, c)[0] - 0.3


def test_lr_weights_sum_checkpoints_and_max_over_tasks():
    rng = np.random.default_rng(1)
    D, n, K = 50, 12, 3
    per_ck, want_task = [], np.zeros((K, n))
    lrs = np.array([3e-4, 1e-4])
    for lr in lrs:
        U, T = rng.normal(size=(n, D)) + 0.5, rng.normal(size=(K, D))
        st = stats_of(U, T)
        per_ck.append(st)
        mu = U.mean(0)
        want_task += lr / lrs.sum() * np.array([[along(u - mu, t) for u in U] for t in T])
    joined = {k: np.concatenate([st[k] for st in per_ck]) for k in per_ck[0]}
    values, per_task = less_values(**joined, weights=lrs, center=True, reduce="max")
    np.testing.assert_allclose(per_task, want_task, rtol=1e-10)
    np.testing.assert_allclose(values, want_task.max(0), rtol=1e-10)
    # each checkpoint alone, then their lr-weighted sum (weights normalised to sum 1, as LESS does)
    alone = [less_values(**st, weights=[1.0], center=True)[1] for st in per_ck]
    np.testing.assert_allclose(per_task, (lrs[0] * alone[0] + lrs[1] * alone[1]) / lrs.sum(), rtol=1e-10)
    # only the ratio of the weights matters
    np.testing.assert_allclose(less_values(**joined, weights=lrs * 7, center=True)[0], values, rtol=1e-12)
    # each task alone is its own column; mean instead of max
    for k in range(K):
        one = {**joined, "task_dots": joined["task_dots"][:, :, [k]], "center_task_dots": joined["center_task_dots"][:, [k]]}
        np.testing.assert_allclose(less_values(**one, weights=lrs)[0], per_task[k], rtol=1e-12)
    mean, _ = less_values(**joined, weights=lrs, center=True, reduce="mean")
    np.testing.assert_allclose(mean, want_task.mean(0), rtol=1e-10)
    # max-z: each task standardised over the rows, then the max; the per-task values unchanged
    maxz, per_task_z = less_values(**joined, weights=lrs, center=True, reduce="max-z")
    z = (want_task - want_task.mean(1, keepdims=True)) / want_task.std(1, keepdims=True)
    np.testing.assert_allclose(maxz, z.max(0), rtol=1e-9)
    np.testing.assert_allclose(per_task_z, per_task, rtol=1e-12)


def test_max_z_balances_a_task_with_larger_cosines():
    """A task whose cosines are all ten times larger takes every top row under the plain max;
    on the z scale each task's best rows rank equally."""
    per = np.array([[10.0, 9.0, 8.0, 1.0, 2.0, 3.0], [0.1, 0.2, 0.3, 3.0, 2.0, 1.0]])  # [tasks, rows]
    k, n = per.shape
    stats = {"task_dots": per.T[None], "norms2": np.ones((1, n)), "center_dots": np.zeros((1, n)),
             "center_norm2": np.zeros(1), "center_task_dots": np.zeros((1, k))}
    plain = less_values(**stats, weights=[1.0], center=False, reduce="max")[0]
    assert list(np.argsort(-plain)[:3]) == [0, 1, 2]  # task 1's rows only
    z = less_values(**stats, weights=[1.0], center=False, reduce="max-z")[0]
    assert set(np.argsort(-z)[:2]) == {0, 3}  # the best row of each task


def test_values_ignore_the_scale_of_a_gradient():
    rng = np.random.default_rng(2)
    U, T = rng.normal(size=(8, 30)) + 1.0, rng.normal(size=(2, 30))
    base, base_tasks = less_values(**stats_of(U, T), weights=[1.0], center=False)
    scaled = U.copy()
    scaled[3] *= 40.0
    scaled[5] *= 0.01
    got, got_tasks = less_values(**stats_of(scaled, T, mu=U.mean(0)), weights=[1.0], center=False)
    np.testing.assert_allclose(got, base, rtol=1e-12)
    np.testing.assert_allclose(got_tasks, base_tasks, rtol=1e-12)
    # centred: scaling every row (and so the centre) changes nothing either
    c1 = less_values(**stats_of(U, T), weights=[1.0], center=True)[0]
    c2 = less_values(**stats_of(U * 1e3, T), weights=[1.0], center=True)[0]
    np.testing.assert_allclose(c2, c1, rtol=1e-9)
    # a row without a gradient (NaN statistics) stays NaN
    st = stats_of(U, T)
    st["task_dots"][0, 2] = np.nan
    st["norms2"][0, 2] = np.nan
    st["center_dots"][0, 2] = np.nan
    out = less_values(**st, weights=[1.0])[0]
    assert np.isnan(out[2]) and np.all(np.isfinite(np.delete(out, 2)))


# -- FirstOrderValuation(normalize="less") on the tiny model -------------------------------------

CONFIG = TrainConfig(max_length=64, precision="fp32", lora_r=4, lr=5e-2, batch_size=2, epochs=2)


@pytest.fixture(scope="module")
def tiny():
    from shedkit.models import load_model

    return load_model("tiny-random")


@pytest.fixture(scope="module")
def rows():
    out = [rec(i, ("user", f"Question {i}: " + "why? " * (i % 4 + 1)), ("assistant", f"Answer {i} " + "because. " * (i % 3 + 1)))
           for i in range(10)]
    out.append(rec(10, ("system", "Be brief."), ("user", "Say hi."), ("assistant", "Hi!")))
    return out


def valuation(tmp_path, **kw):
    args = dict(model="tiny-random", train_config=CONFIG, warmup_rows=4, checkpoints=2, cache_dir=tmp_path / "cache",
                batch_size=3, progress=False, seed=0, normalize="less")
    args.update(kw)
    return FirstOrderValuation(**args)


def test_less_values_equal_a_hand_computation(tmp_path, tiny, rows):
    """Σ_t η_t/Ση · mean_{j in task k} cos(Γ_t(g_z) - μ_t, g_j), max over the two tasks, from
    the cached checkpoint weights and Adam states and one backward per row."""
    from safetensors.torch import load_file

    from shedkit.models.encode import encode_record
    from shedkit.models.gradients import attach_lora, load_adam_state, load_lora_state, naive_row_gradients
    from shedkit.models.scoring import pad_id_of

    tasks = [("a", rows[:2]), ("b", rows[2:5])]
    fit = valuation(tmp_path).fit(rows, rows[:5], tasks=tasks)
    assert fit.task_names_ == ["a", "b"] and fit.less_tasks_.shape == (2, len(rows))
    assert fit.stats_["warmup"] == "trained" and fit.stats_["less"]["center_rows"] == len(rows)
    model, tok = tiny
    lora = attach_lora(copy.deepcopy(model), CONFIG, seed=0)
    cache = Path(fit.stats_["cache_dir"])
    lrs = json.loads((cache / "checkpoints.json").read_text())["lr"]
    pad = pad_id_of(tok)
    seqs = [encode_record(tok, r, 64, "auto") for r in rows]
    want = np.zeros((2, len(rows)))
    for t, lr in enumerate(lrs):
        load_lora_state(lora, load_file(str(cache / f"checkpoint-{t}.safetensors")))
        adam = load_adam_state(cache / f"adam-{t}.safetensors")
        assert adam.step == json.loads((cache / "checkpoints.json").read_text())["steps"][t]
        names = sorted(adam.exp_avg)
        flat = lambda g: torch.cat([g[n].double().reshape(-1) for n in names])  # noqa: E731
        grads = naive_row_gradients(lora, seqs, pad)
        u = torch.stack([flat({n: adam.direction(n, g[n].float()) for n in names}) for g in grads])
        c = u - u.mean(0)
        for k, (_, task) in enumerate(tasks):
            dev = torch.stack([flat(g) for g in naive_row_gradients(lora, [encode_record(tok, r, 64, "auto") for r in task], pad)])
            cosines = (c / c.norm(dim=1, keepdim=True)) @ (dev / dev.norm(dim=1, keepdim=True)).T
            want[k] += lr / sum(lrs) * cosines.mean(1).numpy()
    np.testing.assert_allclose(fit.less_tasks_, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fit.less_, want.max(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(fit.result_.values, fit.less_)
    assert fit.params()["task_reduce"] == "max" and fit.params()["tasks"] == ["a", "b"]
    # the raw and cosine values come along, the same as a raw fit's
    raw = valuation(tmp_path / "raw", normalize="raw").fit(rows, rows[:5])
    np.testing.assert_allclose(fit.raw_, raw.raw_, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(fit.cosine_, raw.cosine_, rtol=1e-6, atol=1e-10)


def test_cache_seed_and_options_that_reuse_it(tmp_path, rows, monkeypatch):
    import shedkit.models.gradients as grads

    tasks = [rows[:2], rows[2:4]]
    first = valuation(tmp_path).fit(rows, rows[:4], tasks=tasks)
    assert first.stats_["row_gradients_computed"] == 2 * len(rows)

    def no_gradients(*a, **k):
        raise AssertionError("a gradient was computed again")

    for name in ("checkpoint_gradient_stats", "warmup_checkpoints", "checkpoint_task_directions",
                 "checkpoint_preconditioned_mean"):
        monkeypatch.setattr(grads, name, no_gradients)
    again = valuation(tmp_path).fit(rows, rows[:4], tasks=tasks)
    np.testing.assert_array_equal(again.less_, first.less_)
    # uncentred (LESS as published) and a mean over tasks: the same cache, other numbers
    plain = valuation(tmp_path, center=False).fit(rows, rows[:4], tasks=tasks)
    mean = valuation(tmp_path, task_reduce="mean").fit(rows, rows[:4], tasks=tasks)
    assert plain.stats_["row_gradients_computed"] == mean.stats_["row_gradients_computed"] == 0
    np.testing.assert_allclose(mean.less_, first.less_tasks_.mean(0), rtol=1e-12)
    assert not np.allclose(plain.less_, first.less_)
    # raw from the cache a less fit wrote
    raw = valuation(tmp_path, normalize="raw").fit(rows, rows[:4])
    np.testing.assert_array_equal(raw.raw_, first.raw_)
    monkeypatch.undo()
    # a seed reproduces exactly in a fresh cache; another seed gives other values
    fresh = valuation(tmp_path / "fresh").fit(rows, rows[:4], tasks=tasks)
    np.testing.assert_array_equal(fresh.less_, first.less_)
    other = valuation(tmp_path / "other", seed=1).fit(rows, rows[:4], tasks=tasks)
    assert not np.allclose(other.less_, first.less_)


def test_a_cache_without_the_optimizer_state_gets_it(tmp_path, rows):
    """A raw-only cache written before the Adam state was kept: the warm-up is re-run for it
    (reproducing the cached weights), the raw rows are not recomputed into the main cache."""
    raw = valuation(tmp_path, normalize="raw").fit(rows, rows[:3])
    cache = Path(raw.stats_["cache_dir"])
    for f in cache.glob("adam-*.safetensors"):
        f.unlink()
    parts = sorted(cache.glob("part-*.jsonl"))
    fit = valuation(tmp_path).fit(rows, rows[:3])
    assert fit.stats_["warmup"] == "retrained for its optimizer state"
    assert sorted(cache.glob("part-*.jsonl")) == parts  # raw rows untouched
    assert len(list(cache.glob("adam-*.safetensors"))) == 2
    fresh = valuation(tmp_path / "fresh").fit(rows, rows[:3])
    np.testing.assert_allclose(fit.less_, fresh.less_, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(fit.raw_, raw.raw_)


def test_a_killed_less_run_resumes(tmp_path, rows, monkeypatch):
    import shedkit.models.gradients as grads

    calls = {"n": 0}
    real = grads.checkpoint_gradient_stats

    def dies_on_second_chunk(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(grads, "checkpoint_gradient_stats", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        valuation(tmp_path, chunk_rows=4).fit(rows, rows[:3])
    monkeypatch.setattr(grads, "checkpoint_gradient_stats", real)
    resumed = valuation(tmp_path, chunk_rows=4).fit(rows, rows[:3])
    assert resumed.stats_["warmup"] == "cached" and "center" not in resumed.stats_["timings"]
    assert resumed.stats_["row_gradients_computed"] == 2 * (len(rows) - 4)
    fresh = valuation(tmp_path / "fresh").fit(rows, rows[:3])
    np.testing.assert_allclose(resumed.less_, fresh.less_, rtol=1e-6, atol=1e-7)  # other batches: fp32 sums


def test_center_rows_sample_and_bad_options(tmp_path, rows):
    from shedkit.errors import ShedkitError

    fit = valuation(tmp_path, center_rows=4).fit(rows, rows[:3])
    assert fit.stats_["less"]["center_rows"] == 4 and fit.stats_["center_gradients_computed"] == 2 * 4
    assert np.all(np.isfinite(fit.less_))
    with pytest.raises(ShedkitError, match="task_reduce"):
        valuation(tmp_path, task_reduce="min").fit(rows, rows[:3])
    with pytest.raises(ShedkitError, match="normalize"):
        valuation(tmp_path, normalize="centred").fit(rows, rows[:3])


def test_less_cache_files_follow_the_umask(tmp_path, rows):
    """Adam states, target directions, centres (safetensors) and row parts get umask modes."""
    import os

    from helpers import mode_of, umask_setter

    gen = umask_setter()
    set_umask = next(gen)
    try:
        set_umask(0o022)
        valuation(tmp_path).fit(rows, rows[:3])
        seen = []
        for here, dirs, files in os.walk(tmp_path / "cache"):
            for d in dirs:
                assert mode_of(os.path.join(here, d)) == 0o755, os.path.join(here, d)
            for f in files:
                assert mode_of(os.path.join(here, f)) == 0o644, os.path.join(here, f)
                seen.append(f)
        assert {"adam-0.safetensors", "targets-0.safetensors", "center-1.safetensors", "less.json"} <= set(seen)
    finally:
        gen.close()
