"""Tests for acmr_np.metrics: hand-computed rankings, then a slow per-query reference."""
import numpy as np
import pytest

from acmr_np.errors import InputError
from acmr_np.metrics import (average_precisions, evaluate_retrieval, mean_average_precision, precision_at_k,
                             precision_recall_curve)
from acmr_np.ranking import cosine_similarity, rank_gallery

# One query along the x axis. Every dot product below is exact in floating point
# (entries are 0, +-1 or equal pairs), so the rankings are certain, ties included.
QUERY = np.array([[1.0, 0.0]])
# similarity to QUERY:   0         -1          1          0.707
GALLERY = np.array([[0.0, 1.0], [-1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
# ranking by similarity: index 2, 3, 0, 1 (deliberately not gallery order)


def ap_of(gallery_labels, query_label=0, k=None, gallery=GALLERY, query=QUERY):
    return average_precisions(query, np.array([query_label]), gallery,
                              np.array(gallery_labels), k=k)[0]


# ----------------------------------------------------------------------------- by hand

def test_relevant_at_ranks_1_and_3():
    # relevant: index 2 (rank 1) and index 0 (rank 3)
    assert ap_of([0, 1, 0, 1]) == pytest.approx(0.5 * (1 / 1 + 2 / 3), abs=1e-15)


def test_map_at_k_truncates_and_divides_by_relevant_found():
    labels = [0, 1, 1, 0]  # relevant: index 3 (rank 2) and index 0 (rank 3)
    assert ap_of(labels) == pytest.approx(0.5 * (1 / 2 + 2 / 3), abs=1e-15)
    assert ap_of(labels, k=2) == pytest.approx(1 / 2, abs=1e-15)  # one found, at rank 2
    assert ap_of(labels, k=1) == 0.0                              # none in the top 1
    assert ap_of(labels, k=100) == ap_of(labels)                  # k > ng: whole list


def test_ties_are_ranked_by_gallery_index():
    # indices 0 and 1 both have similarity 0 to the query ([0, 1] and [0, -1]).
    gallery = np.array([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0]])
    # ranking must be 2, 0, 1: if only index 1 is relevant it sits at rank 3 ...
    assert ap_of([1, 0, 1], gallery=gallery) == pytest.approx(1 / 3, abs=1e-15)
    # ... and if only index 0 is relevant it sits at rank 2.
    assert ap_of([0, 1, 1], gallery=gallery) == pytest.approx(1 / 2, abs=1e-15)
    p = precision_at_k(QUERY, np.array([0]), gallery, np.array([1, 0, 1]), ks=[2, 3])
    np.testing.assert_allclose(p, [0.0, 1 / 3], atol=1e-15)


def test_many_ties_follow_gallery_order():
    # Small sorts are stable by accident (insertion sort); 300 items with only three
    # distinct similarities (1, 0, -1: exact) catch an unstable or reversed sort.
    rng = np.random.default_rng(3)
    axes = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    pick = rng.integers(0, 3, size=300)
    gallery, labels = axes[pick], rng.integers(0, 2, size=300)
    # Python's sorted() is stable: best similarity group first, index order inside it
    order = sorted(range(300), key=lambda j: pick[j])
    relevant = labels[order] == 0
    hits = np.cumsum(relevant)
    expected = (hits / np.arange(1, 301))[relevant].sum() / relevant.sum()
    assert ap_of(labels, gallery=gallery) == pytest.approx(expected, abs=1e-14)
    expected_k = (hits / np.arange(1, 301))[:150][relevant[:150]].sum() / hits[149]
    assert ap_of(labels, k=150, gallery=gallery) == pytest.approx(expected_k, abs=1e-14)



def test_rank_gallery_is_the_ranking_the_metrics_score():
    # by hand (GALLERY's comment): 2, 3, 0, 1
    np.testing.assert_array_equal(rank_gallery(QUERY, GALLERY), [[2, 3, 0, 1]])
    np.testing.assert_array_equal(rank_gallery(QUERY, GALLERY, top=2), [[2, 3]])
    assert rank_gallery(QUERY, GALLERY, top=99).shape == (1, 4)      # capped by the gallery
    # the 300-item tie case: best similarity group first, index order inside it
    rng = np.random.default_rng(3)
    axes = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    pick = rng.integers(0, 3, size=300)
    assert rank_gallery(QUERY, axes[pick])[0].tolist() == sorted(range(300), key=lambda j: pick[j])
    # precision@k from its ranking is precision_at_k's, float32 (the fast sort) included
    q = rng.normal(size=(20, 5)).astype(np.float32)
    g = np.round(rng.normal(size=(60, 5)), 1).astype(np.float32)
    ql, gl = rng.integers(0, 3, size=20), rng.integers(0, 3, size=60)
    ranked = rank_gallery(q, g)
    assert ranked.dtype == np.int64 and sorted(ranked[0].tolist()) == list(range(60))
    hits = np.cumsum(gl[ranked] == ql[:, None], axis=1)
    np.testing.assert_allclose([hits[:, k - 1].mean() / k for k in (1, 7, 60)],
                               precision_at_k(q, ql, g, gl, [1, 7, 60]), atol=1e-12)
    with pytest.raises(InputError, match="top"):
        rank_gallery(QUERY, GALLERY, top=0)

def test_query_without_relevant_items_scores_zero_and_counts_in_the_mean():
    queries = np.vstack([QUERY, QUERY])
    ap = average_precisions(queries, np.array([0, 7]), GALLERY, np.array([0, 1, 0, 1]))
    np.testing.assert_allclose(ap, [5 / 6, 0.0], atol=1e-15)
    assert mean_average_precision(queries, np.array([0, 7]), GALLERY,
                                  np.array([0, 1, 0, 1])) == pytest.approx(5 / 12)


def test_zero_vectors_give_zero_similarity_not_nan():
    gallery = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    sim = cosine_similarity(np.array([[0.0, 0.0], [1.0, 0.0]]), gallery)
    np.testing.assert_allclose(sim, [[0, 0, 0], [1, 0, 0]], atol=1e-15)
    # a zero query ties with everything, so the ranking is gallery order: ranks 2, 3
    ap = ap_of([1, 0, 0], query=np.zeros((1, 2)), gallery=gallery)
    assert ap == pytest.approx(0.5 * (1 / 2 + 2 / 3), abs=1e-15)


def test_precision_recall_curve_by_hand():
    # relevant at ranks 1 and 3 of 4 (as in the first test)
    prec, rec = precision_recall_curve(QUERY, np.array([0]), GALLERY, np.array([0, 1, 0, 1]))
    np.testing.assert_allclose(prec, [1, 1 / 2, 2 / 3, 2 / 4], atol=1e-15)
    np.testing.assert_allclose(rec, [1 / 2, 1 / 2, 1, 1], atol=1e-15)


# ----------------------------------------------------------------------------- reference

def reference(q, ql, g, gl, k=None):
    """Slow, obvious version: full similarity matrix, one query at a time.

    Returns (ap (nq,), precision@r (nq, ng), recall@r (nq, ng)); ap uses the top k.
    """
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    sim = qn @ gn.T
    ng = len(g)
    aps, precs, recs = [], [], []
    for i in range(len(q)):
        order = np.argsort(-sim[i], kind="stable")
        relevant = gl[order] == ql[i]
        hits, total = 0, 0.0  # DSCMR's fx_calc_map_label loop, written out
        for r, j in enumerate(order if k is None else order[:k], start=1):
            if gl[j] == ql[i]:
                hits += 1
                total += hits / r
        aps.append(total / hits if hits else 0.0)
        cum = np.cumsum(relevant)
        precs.append(cum / np.arange(1, ng + 1))
        recs.append(cum / relevant.sum() if relevant.sum() else np.zeros(ng))
    return np.array(aps), np.array(precs), np.array(recs)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    nq, ng, d = 23, 31, 6
    q, g = rng.normal(size=(nq, d)), rng.normal(size=(ng, d))
    ql = rng.integers(0, 5, size=nq)  # class 4 never appears in the gallery: R = 0
    gl = rng.integers(0, 4, size=ng)
    assert (ql == 4).any()
    return q, ql, g, gl


@pytest.mark.parametrize("k", [None, 1, 5, 31, 50])
def test_average_precisions_match_reference_for_every_chunk_size(data, k):
    q, ql, g, gl = data
    expected = reference(q, ql, g, gl, k=k)[0]
    unchunked = average_precisions(q, ql, g, gl, k=k, chunk_size=1000)
    np.testing.assert_allclose(unchunked, expected, rtol=0, atol=1e-12)
    for chunk_size in (1, 7, 23, 24):
        chunked = average_precisions(q, ql, g, gl, k=k, chunk_size=chunk_size)
        np.testing.assert_array_equal(chunked, unchunked)
    assert unchunked.dtype == np.float64 and unchunked.shape == (23,)
    assert mean_average_precision(q, ql, g, gl, k=k, chunk_size=7) == pytest.approx(
        expected.mean(), abs=1e-12)


def test_precision_at_k_matches_reference(data):
    q, ql, g, gl = data
    prec = reference(q, ql, g, gl)[1]
    ks = [1, 3, 10, 31]
    for chunk_size in (1, 7, 100):
        got = precision_at_k(q, ql, g, gl, ks, chunk_size=chunk_size)
        np.testing.assert_allclose(got, prec[:, np.array(ks) - 1].mean(axis=0), atol=1e-12)


def test_precision_recall_curve_matches_reference(data):
    q, ql, g, gl = data
    _, prec, rec = reference(q, ql, g, gl)
    for chunk_size in (1, 7, 100):
        p, r = precision_recall_curve(q, ql, g, gl, chunk_size=chunk_size)
        assert p.shape == r.shape == (31,)
        np.testing.assert_allclose(p, prec.mean(axis=0), atol=1e-12)
        np.testing.assert_allclose(r, rec.mean(axis=0), atol=1e-12)


def test_recall_ends_at_one_when_every_query_has_relevant_items(data):
    q, ql, g, gl = data
    keep = ql < 4
    p, r = precision_recall_curve(q[keep], ql[keep], g, gl, chunk_size=5)
    assert r[-1] == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.diff(r) >= 0)
    # at r = ng every query sees the whole gallery: precision = R / ng on average
    assert p[-1] == pytest.approx(np.mean([(gl == c).sum() / len(gl) for c in ql[keep]]))


# ----------------------------------------------------------------------------- evaluate

def test_evaluate_retrieval_keys_and_symmetry(data):
    _, _, g, gl = data
    img, txt = g, g[:, ::-1] + 0.3 * np.random.default_rng(1).normal(size=g.shape)
    res = evaluate_retrieval(img, txt, gl, k=10, chunk_size=8)
    assert set(res) == {"map_img2txt", "map_txt2img", "map_avg",
                        "map10_img2txt", "map10_txt2img", "map10_avg"}
    assert all(type(v) is float for v in res.values())
    assert res["map_img2txt"] == pytest.approx(mean_average_precision(img, gl, txt, gl))
    assert res["map10_txt2img"] == pytest.approx(mean_average_precision(txt, gl, img, gl, k=10))
    assert res["map_avg"] == pytest.approx((res["map_img2txt"] + res["map_txt2img"]) / 2)
    swapped = evaluate_retrieval(txt, img, gl, k=10)
    for d in ("", "10"):
        assert swapped[f"map{d}_img2txt"] == res[f"map{d}_txt2img"]
        assert swapped[f"map{d}_txt2img"] == res[f"map{d}_img2txt"]
    assert "map50_avg" in evaluate_retrieval(img, txt, gl)  # default k = 50 (> n is fine)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("args, kwargs, match", [
    ((np.ones((3, 2)), np.zeros(4, int), np.ones((5, 2)), np.zeros(5, int)), {}, "3 rows"),
    ((np.ones((3, 2)), np.zeros(3, int), np.ones((5, 3)), np.zeros(5, int)), {}, "width"),
    ((np.ones((3, 2)), np.zeros((3, 2, 2), int), np.ones((5, 2)), np.zeros(5, int)), {}, "1-D"),
    ((np.ones((3, 2)), np.zeros(3), np.ones((5, 2)), np.zeros(5, int)), {}, "integer"),
    ((np.full((3, 2), np.nan), np.zeros(3, int), np.ones((5, 2)), np.zeros(5, int)), {}, "NaN"),
    ((np.ones((3, 2)), np.zeros(3, int), np.ones((5, 2)), np.zeros(5, int)),
     {"chunk_size": 0}, "chunk_size"),
    ((np.ones((3, 2)), np.zeros(3, int), np.ones((5, 2)), np.zeros(5, int)), {"k": 0}, "k"),
])
def test_bad_arguments_raise_input_error(args, kwargs, match):
    with pytest.raises(InputError, match=match):
        average_precisions(*args, **kwargs)


def test_bad_arguments_elsewhere():
    q, ql = np.ones((3, 2)), np.zeros(3, int)
    with pytest.raises(InputError, match="precision@6"):
        precision_at_k(q, ql, q, ql, ks=[6])
    with pytest.raises(InputError, match="paired"):
        evaluate_retrieval(q, np.ones((4, 2)), ql)
    with pytest.raises(InputError, match="k must be"):
        evaluate_retrieval(q, q, ql, k=-1)


# ----------------------------------------------------------------------------- GPU

@pytest.mark.gpu
def test_cupy_matches_numpy(data):
    import cupy

    q, ql, g, gl = data
    # device embeddings with host labels (moved inside), and float64 so rankings agree
    qd, gd = cupy.asarray(q), cupy.asarray(g)
    for k in (None, 5):
        np.testing.assert_allclose(average_precisions(qd, ql, gd, cupy.asarray(gl), k=k,
                                                      chunk_size=7),
                                   average_precisions(q, ql, g, gl, k=k), atol=1e-12)
    np.testing.assert_allclose(precision_at_k(qd, ql, gd, gl, ks=[1, 10], chunk_size=7),
                               precision_at_k(q, ql, g, gl, ks=[1, 10]), atol=1e-12)
    for got, want in zip(precision_recall_curve(qd, ql, gd, gl, chunk_size=7),
                         precision_recall_curve(q, ql, g, gl)):
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, want, atol=1e-12)
    # the tie rule holds on the GPU too
    tie = cupy.asarray([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0]])
    assert average_precisions(cupy.asarray(QUERY), np.array([0]), tie,
                              np.array([1, 0, 1]))[0] == pytest.approx(1 / 3)
    res_d = evaluate_retrieval(gd, gd * 2 + 1, cupy.asarray(gl), k=10)
    res_h = evaluate_retrieval(g, g * 2 + 1, gl, k=10)
    assert res_d == pytest.approx(res_h, abs=1e-12)


def test_recall_at_k_against_a_loop_with_ties():
    from acmr_np.ranking import recall_at_k
    rng = np.random.default_rng(11)
    n = 23
    q = rng.normal(size=(n, 4))
    g = rng.normal(size=(n, 4))
    g[5] = g[2] * 3.0            # item 5 ties item 2 for every query: the lower index ranks first
    g[7] = q[7]                  # query 7's partner is its best match
    g[11] = g[3]                 # query 11's partner ties item 3 (lower index): ranked after it
    q[0] = 0.0                   # a zero query: every similarity 0, so its partner ranks at index 0
    ks = (1, 2, 5, 23)

    def cos(a, b):
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        return 0.0 if na < 1e-12 or nb < 1e-12 else float(a @ b / na / nb)

    want = []
    for k in ks:
        hits = 0
        for i in range(n):
            sims = [cos(q[i], g[j]) for j in range(n)]
            order = sorted(range(n), key=lambda j: (-sims[j], j))
            hits += i in order[:k]
        want.append(hits / n)
    for chunk in (1, 5, 64):
        np.testing.assert_allclose(recall_at_k(q, g, ks, chunk_size=chunk), want, rtol=0, atol=1e-15)
    assert recall_at_k(q, g, ks)[-1] == 1.0 and want[0] > 0


def test_chance_map_is_the_mean_over_every_ranking():
    """The closed form against the exact mean AP over all n! orders of the gallery (every
    query ranks the same random order: each order is equally likely), AP by the loop
    definition; and against a hand-computed case."""
    import itertools
    from acmr_np.metrics import chance_map
    from acmr_np.errors import InputError
    labels = np.array([0, 0, 1, 1, 1, 2])
    n, total, count = len(labels), 0.0, 0
    for order in itertools.permutations(range(n)):
        for q in range(n):
            hits, ap = 0, 0.0
            for rank, g in enumerate(order, start=1):
                if labels[g] == labels[q]:
                    hits += 1
                    ap += hits / rank
            total += ap / np.sum(labels == labels[q])
            count += 1
    assert chance_map(labels) == pytest.approx(total / count, rel=1e-12)
    assert chance_map([0, 1]) == pytest.approx(0.75, rel=1e-15)   # the partner first or second: (1 + 1/2) / 2
    assert chance_map([3, 3, 3]) == 1.0
    for bad in ([1], [[0, 1]], [0.0, 1.0], [-1, 0]):
        with pytest.raises(InputError, match=r"^chance_map: expected at least 2 non-negative integer class ids"):
            chance_map(bad)
