"""Ranking a gallery by cosine similarity: the rule every metric scores, and retrieval.

For each query, the gallery items are ordered by cosine similarity, highest first, with a
*stable* sort: equal similarities are ranked by gallery index, ascending (equal as
computed in floating point; a zero embedding has similarity 0 to everything). Queries are
ranked in chunks, so memory grows with chunk_size * n_gallery (``chunk_size=None``
chooses it per backend: ``default_chunk_size``). Here: that ranking (``rank_gallery``,
``stable_argsort_desc``), ``retrieve`` (the top-k items and their scores) and the
instance-level ``recall_at_k`` of paired data; the metrics of relevance (mAP, precision@k,
precision-recall) are in metrics.py. Every function runs on NumPy or CuPy, whichever holds
the embeddings; results come back as host arrays.
"""
import numbers

import numpy

from .backend import get_array_module, to_device, to_host
from .errors import InputError
from .fast import argsort_desc_float32

_EPS = 1e-12  # a vector shorter than this is treated as zero: it gets similarity 0, not NaN

# Queries ranked at once when chunk_size is None. NumPy: 256, measured fastest on the CPU
# (docs/PERFORMANCE.md, Evaluation). CuPy: as many queries as keep a chunk at about
# CUPY_CHUNK_ENTRIES (query, gallery) entries, at least 256. A chunk's temporaries take
# about 40 bytes per entry on the device (similarity, its negation, the sort's keys and
# int64 indices, the gathered labels, the hit counts, the float64 precisions), so ~1.3 GiB
# whatever the gallery size; each of its kernels then runs over 2**25 elements, far more
# than a GPU needs to fill every core, and a whole validation or test split of a few
# thousand items is one chunk. Chosen from these sizes; NOT measured on a GPU.
NUMPY_CHUNK_SIZE = 256
CUPY_CHUNK_ENTRIES = 1 << 25


def on_backend(x, xp):
    """Return ``x`` as an array of the module ``xp`` (copies between host and device)."""
    return to_host(x) if xp is numpy else to_device(x, xp)


def l2_normalise(x, xp):
    """Scale each row of x (n, d) to unit length; rows with norm < _EPS become ~0."""
    norms = xp.sqrt((x * x).sum(axis=1, keepdims=True))  # (n, 1)
    return x / xp.maximum(norms, _EPS)


def stable_argsort_desc(sim, xp):
    """Indices (c, ng) that sort each row of sim (c, ng) from highest to lowest.

    Sorting -sim ascending with a stable sort keeps equal values in index order;
    reversing an ascending sort instead would put ties in *descending* index order.
    NumPy's default sort is not stable, so we ask for it; CuPy's argsort is always
    stable (and older CuPy versions reject the ``kind`` argument). For float32 on NumPy,
    acmr_np.fast gives the same order several times faster.
    """
    if xp is numpy:
        if sim.dtype == numpy.float32 and sim.shape[1] <= 2 ** 32:
            return argsort_desc_float32(sim)
        return numpy.argsort(-sim, axis=1, kind="stable")
    return xp.argsort(-sim, axis=1)


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")


def _check_finite(who, q, g, xp):
    if not bool(xp.isfinite(q).all() & xp.isfinite(g).all()):
        raise InputError(f"{who}: the embeddings contain NaN or inf")


def default_chunk_size(xp, n_gallery):
    """The queries ranked at once when chunk_size is None: NUMPY_CHUNK_SIZE on NumPy, and on
    CuPy CUPY_CHUNK_ENTRIES // n_gallery (at least 256; see CUPY_CHUNK_ENTRIES)."""
    if xp is numpy:
        return NUMPY_CHUNK_SIZE
    return max(NUMPY_CHUNK_SIZE, CUPY_CHUNK_ENTRIES // max(int(n_gallery), 1))


def resolve_chunk_size(chunk_size, xp, n_gallery):
    """chunk_size as given, or the backend's default for None. (The callers check a given
    chunk_size up front, before any array moves.)"""
    return default_chunk_size(xp, n_gallery) if chunk_size is None else chunk_size


def chunks(n, chunk_size):
    """Slices start:stop covering range(n) in steps of chunk_size."""
    return (slice(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size))


def cosine_similarity(queries, gallery):
    """Cosine similarity of every query with every gallery item.

    queries (nq, d), gallery (ng, d) -> (nq, ng), on the backend of the inputs.
    Rows are L2-normalised with a small epsilon, so a zero vector has similarity 0
    with everything instead of NaN. Builds the full matrix: for evaluation use the
    chunked functions below.
    """
    xp = get_array_module(queries, gallery)
    queries, gallery = on_backend(queries, xp), on_backend(gallery, xp)
    return l2_normalise(queries, xp) @ l2_normalise(gallery, xp).T


def rank_gallery(query_emb, gallery_emb, top=None):
    """Each query's ranking of the gallery, best first: the ranking every metric here
    scores, for looking at a few queries (retrieval examples, debugging).

    query_emb (nq, d), gallery_emb (ng, d), any backend; top: how many ranks to keep
    (None: all ng; more than ng is the same as ng). Returns a host int64 array
    (nq, top) of gallery indices: cosine similarity, highest first, equal similarities
    by gallery index, ascending. Builds the full (nq, ng) similarity matrix, so it is
    meant for a few queries, not for scoring a whole split.
    """
    sim = cosine_similarity(query_emb, gallery_emb)             # (nq, ng), on the inputs' backend
    if top is not None:
        check_positive_int(top, "top")
    ng = sim.shape[1]
    top = ng if top is None else min(int(top), ng)
    return to_host(stable_argsort_desc(sim, get_array_module(sim))[:, :top])

def retrieve(query_emb, gallery_emb, k=10, chunk_size=None):
    """The top-k gallery items of every query: (indices, scores).

    query_emb (nq, d), gallery_emb (ng, d): embeddings in one common space (e.g.
    model.embed_texts(texts) and model.embed_images(images)), any backend. k: results per
    query (at most ng). Returns host arrays indices (nq, k) int64 into the gallery and
    scores (nq, k) float, the cosine similarities, best first; equal similarities in
    gallery order (the ranking rule of acmr_np.metrics). Memory O(chunk_size * ng).
    """
    check_positive_int(k, "k")
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size")
    xp = get_array_module(query_emb, gallery_emb)
    q, g = on_backend(query_emb, xp), on_backend(gallery_emb, xp)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1] or 0 in q.shape or 0 in g.shape:
        raise ValueError(f"retrieve: expected non-empty query (nq, d) and gallery (ng, d) embeddings of one "
                         f"width, got shapes {tuple(q.shape)} and {tuple(g.shape)}")
    # NaN has no place in a ranking (and would sort first in float32, last in float64).
    # One wait on a GPU: retrieve is for a few queries, not the evaluation loop.
    _check_finite("retrieve", q, g, xp)
    k = min(int(k), g.shape[0])
    chunk_size = resolve_chunk_size(chunk_size, xp, g.shape[0])
    g_unit = l2_normalise(g, xp)
    indices, scores = [], []
    for rows in chunks(q.shape[0], chunk_size):
        sim = l2_normalise(q[rows], xp) @ g_unit.T                 # (c, ng)
        order = stable_argsort_desc(sim, xp)[:, :k]                # (c, k)
        indices.append(order)
        scores.append(xp.take_along_axis(sim, order, axis=1))
    return to_host(xp.concatenate(indices)), to_host(xp.concatenate(scores))


def recall_at_k(query_emb, gallery_emb, ks=(1, 5, 10), chunk_size=256):
    """Instance-level Recall@K on paired data: the share of queries whose own partner
    (gallery item i for query i) is among the top K results.

    query_emb (n, d), gallery_emb (n, d): the two modalities of n pairs, any backend;
    ks: positive ints. Returns a host float64 array (len(ks),). The ranking rule is the
    metrics' (cosine, highest first, equal similarities by gallery index), so no sort is
    needed: the partner's rank is the number of items more similar than it, plus the
    equally similar ones with a lower index. Embeddings holding NaN or inf are refused.
    On a GPU the call waits twice: for that check, and for the one copy at the end.
    """
    xp = get_array_module(query_emb, gallery_emb)
    q, g = on_backend(query_emb, xp), on_backend(gallery_emb, xp)
    if q.ndim != 2 or q.shape != g.shape or 0 in q.shape:
        raise InputError(f"recall_at_k: expected paired embeddings of one shape (n, d), n and d >= 1, got "
                         f"{tuple(q.shape)} and {tuple(g.shape)}")
    ks = numpy.atleast_1d(numpy.asarray(ks)).tolist()
    for k in ks:
        check_positive_int(k, "each k in ks")
    check_positive_int(chunk_size, "chunk_size")
    _check_finite("recall_at_k", q, g, xp)  # all-NaN embeddings would score a perfect recall
    g_unit, n = l2_normalise(g, xp), q.shape[0]
    ranks = xp.empty(n, dtype=xp.int64)
    for rows in chunks(n, chunk_size):
        sim = l2_normalise(q[rows], xp) @ g_unit.T                      # (c, n)
        own = xp.arange(rows.start, rows.stop)
        partner = sim[xp.arange(len(own)), own][:, None]                 # (c, 1)
        before = xp.arange(n)[None, :] < own[:, None]                    # lower gallery index
        ranks[rows] = ((sim > partner) | ((sim == partner) & before)).sum(axis=1)
    k_arr = xp.asarray(ks, dtype=xp.int64)
    return to_host((ranks[:, None] < k_arr[None, :]).mean(axis=0, dtype=xp.float64))
