"""Retrieval metrics: mean average precision (mAP), precision@k and the PR curve.

The protocol is the common one of the cross-modal retrieval literature. Each query of one modality (say an image)
ranks the whole gallery of the other modality (the texts of the same split) by cosine
similarity, highest first. A gallery item is relevant when it has the query's class label;
for multi-label data (labels given as 0/1 rows (n, c)) when it shares at least one label
with the query, the protocol of DCMH (Jiang and Li, CVPR 2017) and SSAH (Li et al., CVPR
2018) on MIRFlickr and NUS-WIDE. ``relevance_protocol`` names the one in use ("same
class" or "shares a label"); for one-hot rows both give the same numbers.

    AP(q)  = (1 / R) * sum over ranks r holding a relevant item of precision@r
    precision@r = (relevant items among the top r) / r

R is the number of relevant items in the gallery (mAP@all, the protocol of most later
papers, e.g. DSCMR's ``fx_calc_map_label`` with k = 0). mAP@k cuts the ranked list at
k and divides by the relevant items found in the top k (the authors' demo used k = 50).
mAP is the mean of AP over all queries.

Two conventions that change numbers, stated once here and in the docstrings:

* Ties: the ranking is a *stable* sort on descending similarity, so items with equal
  similarity are ranked by gallery index, ascending. (Equal means equal as computed in
  floating point.) A zero embedding has similarity 0 to everything, so its ranking is
  simply gallery order.
* A query with no relevant item (R = 0, or none in the top k) has AP = 0 and still
  counts in the mean, as in DSCMR.

The full (n_query, n_gallery) similarity matrix is never built: queries are processed in
chunks of ``chunk_size`` rows, so memory grows with chunk_size * n_gallery, not with
n_query * n_gallery (``chunk_size=None``, the default, chooses it per backend:
``ranking.default_chunk_size``; the ranking rule itself, and ``retrieve``, are in
ranking.py). Inside a chunk everything is vectorised:
similarity -> stable argsort -> gather relevance -> cumsum -> precision at relevant ranks.
Every function runs on NumPy or CuPy, whichever holds the embeddings; the results come
back as host (NumPy) arrays or Python floats. With label rows, relevance inside a chunk is
one more product: (Y_q Y_g^T > 0) (c, ng), read in ranked order. On CuPy nothing waits
for the device until the end: the embeddings' finiteness is checked on the device and its
flags come back in the same copy as the results, one copy per call (``_fetch``).
"""
import numpy

from .backend import get_array_module, to_host
from .errors import InputError
# the ranking rule and its helpers (ranking.py), under the short names used below
from .ranking import (check_positive_int as _check_positive_int, chunks as _chunks, l2_normalise as _l2_normalise,
                      on_backend as _on, resolve_chunk_size as _chunk_size,
                      stable_argsort_desc as _stable_argsort_desc)

# ----------------------------------------------------------------------------- helpers

def relevance_protocol(labels):
    """What counts as relevant for these labels, in words: "same class" for class ids
    (n,), "shares a label" for 0/1 label rows (n, c). (For metrics.json.)"""
    return "shares a label" if labels.ndim == 2 else "same class"


def _check_labels(name, labels, xp, checks):
    """Class ids (n,) as they are, or 0/1 label rows (n, c) as float32 (their products
    count shared labels exactly); anything else is an InputError. On CuPy the 0/1 check
    of label rows joins ``checks`` (see ``_fetch``): nothing waits for the device here."""
    if labels.ndim == 2 and labels.dtype.kind in "biuf":
        if labels.size:
            ok = ((labels == 0) | (labels == 1)).all()
            message = f"{name} label rows must hold only 0 and 1 (multi-label data)"
            if xp is not numpy:
                checks.append((message, ok))
            elif not ok:
                raise InputError(message)
        return labels.astype(xp.float32)
    if labels.ndim != 1 or not numpy.issubdtype(labels.dtype, numpy.integer):
        raise InputError(f"{name} labels must be a 1-D array of integer class ids or 0/1 label rows "
                         f"(n, c), got shape {labels.shape} and dtype {labels.dtype}")
    return labels


def _fetch(xp, arrays, checks):
    """Host copies of result arrays (float64), after the deferred input checks.

    checks: (message, flag) pairs from ``_prepare``, flag a device bool that is True when
    the input passes (label rows of 0 and 1, finite embeddings; on NumPy they were checked
    there, and checks is empty). On CuPy the flags and every array travel in ONE copy, the
    only time the call waits for the device; a False flag then raises the InputError
    NumPy raises up front (the first failing check in order)."""
    if xp is numpy:
        return [to_host(a) for a in arrays]
    parts = [a.ravel() for a in arrays]
    if checks:
        parts.append(xp.stack([flag for _, flag in checks]).astype(xp.float64))
    host = to_host(xp.concatenate(parts))
    sizes = [a.size for a in arrays]
    for (message, _), ok in zip(checks, host[sum(sizes):]):
        if not ok:
            raise InputError(message)
    out, start = [], 0
    for a, n in zip(arrays, sizes):
        out.append(host[start:start + n].reshape(a.shape))
        start += n
    return out


def _prepare(query_emb, query_labels, gallery_emb, gallery_labels, chunk_size):
    """Validate the inputs and put them all on one backend.

    Returns (xp, q, q_labels, g_unit, g_labels, chunk_size, checks) with q (nq, d),
    q_labels (nq,) class ids or (nq, c) float32 0/1 label rows, g_unit (ng, d) the
    L2-normalised gallery, g_labels (ng,) or (ng, c) of the query labels' kind,
    chunk_size resolved (``_chunk_size``) and checks the deferred input checks for
    ``_fetch`` (on NumPy they are made here, and checks is empty: nothing waits on the host).
    """
    if chunk_size is not None:
        _check_positive_int(chunk_size, "chunk_size")
    xp = get_array_module(query_emb, gallery_emb)
    q, g = _on(query_emb, xp), _on(gallery_emb, xp)
    q_labels, g_labels = _on(query_labels, xp), _on(gallery_labels, xp)
    checks = []
    q_labels, g_labels = _check_labels("query", q_labels, xp, checks), _check_labels("gallery", g_labels, xp, checks)
    if q_labels.ndim != g_labels.ndim or q_labels.shape[1:] != g_labels.shape[1:]:
        raise InputError(f"query labels of shape {tuple(q_labels.shape)} and gallery labels of shape "
                         f"{tuple(g_labels.shape)}: both must be class ids (n,) or label rows with the "
                         f"same columns (n, c)")
    for name, emb, labels in (("query", q, q_labels), ("gallery", g, g_labels)):
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise InputError(f"{name} embeddings must be a non-empty 2-D array "
                             f"(n, dim), got shape {emb.shape}")
        if labels.shape[0] != emb.shape[0]:
            raise InputError(f"{name} embeddings have {emb.shape[0]} rows but "
                             f"{name} labels have {labels.shape[0]}")
    if q.shape[1] != g.shape[1]:
        raise InputError(f"query embeddings have width {q.shape[1]} but gallery "
                         f"embeddings have width {g.shape[1]}; both must live in one space")
    for name, emb in (("query", q), ("gallery", g)):
        finite = xp.isfinite(emb).all()
        if xp is numpy:
            if not finite:
                raise InputError(f"{name} embeddings contain NaN or inf")
        else:  # checked with the results, in their copy (_fetch): no wait for the device here
            checks.append((f"{name} embeddings contain NaN or inf", finite))
    return xp, q, q_labels, _l2_normalise(g, xp), g_labels, _chunk_size(chunk_size, xp, g.shape[0]), checks


def _ranked_relevance(q, q_labels, g_unit, g_labels, top, xp):
    """Relevance of the top-ranked gallery items for one chunk of queries.

    q (c, d), q_labels (c,), g_unit (ng, d) unit rows, g_labels (ng,), top <= ng.
    Returns rel (c, top) bool: rel[i, r] is True when the item at rank r + 1 for
    query i has query i's label. Temporaries are (c, ng) and die on return.
    With label rows q_labels (c, k), g_labels (ng, k): True when the item shares at
    least one label with the query.
    """
    sim = _l2_normalise(q, xp) @ g_unit.T                 # (c, ng) cosine similarity
    order = _stable_argsort_desc(sim, xp)[:, :top]        # (c, top) gallery ids, best first
    if q_labels.ndim == 2:
        shares = (q_labels @ g_labels.T) > 0              # (c, ng): shared labels counted exactly
        return xp.take_along_axis(shares, order, axis=1)  # (c, top), in ranked order
    return g_labels[order] == q_labels[:, None]           # (c, top)


# ----------------------------------------------------------------------------- metrics

def average_precisions(query_emb, query_labels, gallery_emb, gallery_labels,
                       k=None, chunk_size=None):
    """Average precision of every query against the whole gallery.

    query_emb (nq, d), query_labels (nq,) integer classes, gallery_emb (ng, d),
    gallery_labels (ng,); or, for multi-label data, 0/1 label rows (nq, c) and (ng, c),
    where relevant means sharing at least one label. k: None for AP@all, or a positive int for AP@k (k larger
    than ng is the same as ng). chunk_size: queries ranked at once; memory is
    O(chunk_size * ng) (None: per backend, ``default_chunk_size``).

    Returns a host float64 array (nq,). The gallery is ranked by cosine similarity,
    highest first, with a stable sort: equal similarities are ranked by gallery index,
    ascending. AP = (1 / R) * sum of precision@r over the ranks r (within the top k,
    if k is given) that hold a relevant item, with R the relevant items in the ranked
    list (whole gallery, or top k). A query with R = 0 gets AP = 0.
    """
    return _fetch(*_average_precisions(query_emb, query_labels, gallery_emb, gallery_labels, (k,),
                                       chunk_size))[0]


def _average_precisions(query_emb, query_labels, gallery_emb, gallery_labels, ks, chunk_size):
    """``average_precisions`` for several cutoffs ks (None = all) from ONE ranking of
    each chunk: the sort is the expensive part. Returns (xp, [AP arrays (nq,) on the
    embeddings' backend], checks): ``_fetch`` brings them to the host."""
    xp, q, q_labels, g_unit, g_labels, chunk_size, checks = _prepare(
        query_emb, query_labels, gallery_emb, gallery_labels, chunk_size)
    ng = g_unit.shape[0]
    for k in ks:
        if k is not None:
            _check_positive_int(k, "k")
    tops = [ng if k is None else min(int(k), ng) for k in ks]
    aps = [xp.empty(q.shape[0], dtype=xp.float64) for _ in tops]   # (nq,) each
    for rows in _chunks(q.shape[0], chunk_size):
        rel_all = _ranked_relevance(q[rows], q_labels[rows], g_unit, g_labels, max(tops), xp)
        for ap, top in zip(aps, tops):
            rel = rel_all[:, :top]
            # precision@r = (relevant items in the top r) / r, summed over the ranks r
            # that hold a relevant item; hits counts exactly in integers (int32: ng < 2**31,
            # and half the memory traffic of int64, for the same float64 quotients).
            hits = xp.cumsum(rel, axis=1, dtype=xp.int32)            # (c, top)
            ranks = xp.arange(1, top + 1, dtype=xp.float64)          # (top,)
            summed = xp.where(rel, hits / ranks, 0.0).sum(axis=1)    # (c,)
            n_relevant = hits[:, -1]                                 # R, or relevant in the top k
            # R = 0 means summed = 0 too; max(R, 1) turns 0/0 into the documented AP = 0
            ap[rows] = summed / xp.maximum(n_relevant, 1)
    return xp, aps, checks


def mean_average_precision(query_emb, query_labels, gallery_emb, gallery_labels,
                           k=None, chunk_size=None):
    """mAP: the mean over queries of ``average_precisions`` (same arguments) as a float."""
    return float(average_precisions(query_emb, query_labels, gallery_emb,
                                    gallery_labels, k=k, chunk_size=chunk_size).mean())


def _both_directions(img_emb, txt_emb, labels, ks, chunk_size):
    """The AP arrays of img->txt and of txt->img for the cutoffs ks, as host arrays:
    (i2t, t2i), lists of (n,) arrays. Host labels go to the device once, and on CuPy both
    directions come back in one copy (``_fetch``)."""
    xp = get_array_module(img_emb, txt_emb)
    labels = _on(labels, xp)
    xp, i2t, checks_i2t = _average_precisions(img_emb, labels, txt_emb, labels, ks, chunk_size)
    _, t2i, checks_t2i = _average_precisions(txt_emb, labels, img_emb, labels, ks, chunk_size)
    host = _fetch(xp, i2t + t2i, checks_i2t + checks_t2i)
    return host[:len(ks)], host[len(ks):]


def paired_map(img_emb, txt_emb, labels, chunk_size=None):
    """The average of img->txt and txt->img mAP@all on one split of pairs: the number
    that selects the best epoch and CCA's components on validation.
    img_emb (n, m), txt_emb (n, m), labels (n,) or 0/1 label rows (n, c) -> float."""
    (i2t,), (t2i,) = _both_directions(img_emb, txt_emb, labels, (None,), chunk_size)
    return 0.5 * (float(i2t.mean()) + float(t2i.mean()))


def precision_at_k(query_emb, query_labels, gallery_emb, gallery_labels, ks,
                   chunk_size=None):
    """Mean precision@k over queries for each k in ks.

    Shapes as in ``average_precisions``; ks: a sequence of ints with 1 <= k <= ng.
    Same ranking and tie rule. Returns a host float64 array (len(ks),) whose entry j
    is the mean over queries of (relevant items in the top ks[j]) / ks[j].
    """
    xp, q, q_labels, g_unit, g_labels, chunk_size, checks = _prepare(
        query_emb, query_labels, gallery_emb, gallery_labels, chunk_size)
    ng = g_unit.shape[0]
    ks = numpy.atleast_1d(to_host(ks)).tolist()
    if not ks:
        raise InputError("ks must hold at least one k")
    for k in ks:
        _check_positive_int(k, "each k in ks")
        if k > ng:
            raise InputError(f"precision@{k} needs at least {k} gallery items, got {ng}")
    k_arr = xp.asarray(ks, dtype=xp.int64)                  # (nk,)
    total = xp.zeros(len(ks), dtype=xp.float64)             # (nk,) sum over queries
    for rows in _chunks(q.shape[0], chunk_size):
        rel = _ranked_relevance(q[rows], q_labels[rows], g_unit, g_labels, max(ks), xp)
        hits = xp.cumsum(rel, axis=1, dtype=xp.int32)       # (c, max k), exact counts
        total += (hits[:, k_arr - 1] / k_arr).sum(axis=0)
    return _fetch(xp, [total / q.shape[0]], checks)[0]


def precision_recall_curve(query_emb, query_labels, gallery_emb, gallery_labels,
                           chunk_size=None):
    """Mean precision@r and recall@r over queries for every cut-off r = 1..ng.

    Shapes as in ``average_precisions``. Returns (precision, recall), host float64
    arrays of shape (ng,): entry r - 1 is the mean over queries of
    (relevant in top r) / r and of (relevant in top r) / R. Queries with R = 0 add
    recall 0 at every r (and precision 0). Per-chunk sums keep memory O(chunk_size * ng).
    """
    xp, q, q_labels, g_unit, g_labels, chunk_size, checks = _prepare(
        query_emb, query_labels, gallery_emb, gallery_labels, chunk_size)
    ng = g_unit.shape[0]
    ranks = xp.arange(1, ng + 1, dtype=xp.float64)          # (ng,)
    precision_sum = xp.zeros(ng, dtype=xp.float64)          # (ng,)
    recall_sum = xp.zeros(ng, dtype=xp.float64)             # (ng,)
    for rows in _chunks(q.shape[0], chunk_size):
        rel = _ranked_relevance(q[rows], q_labels[rows], g_unit, g_labels, ng, xp)
        hits = xp.cumsum(rel, axis=1, dtype=xp.int32)       # (c, ng), exact counts
        n_relevant = hits[:, -1:]                            # (c, 1) R per query
        precision_sum += (hits / ranks).sum(axis=0)
        recall_sum += (hits / xp.maximum(n_relevant, 1.0)).sum(axis=0)  # R = 0 -> 0
    nq = q.shape[0]
    precision, recall = _fetch(xp, [precision_sum / nq, recall_sum / nq], checks)
    return precision, recall


def evaluate_retrieval(img_emb, txt_emb, labels, k=50, chunk_size=None):
    """Both retrieval directions on one split, as reported in ACMR.md section 7.

    img_emb (n, d) and txt_emb (n, d) are the paired common-space embeddings of one
    split, labels (n,) their shared classes (or (n, c) 0/1 label rows: relevant = shares
    a label). img->txt ranks the texts for each image query; txt->img the reverse. Returns a dict of floats:
    map_img2txt, map_txt2img, map_avg (mAP@all) and map{k}_img2txt, map{k}_txt2img,
    map{k}_avg (mAP@k; e.g. map50_img2txt for the default k = 50).
    """
    _check_positive_int(k, "k")
    n_img, n_txt, n_lab = len(img_emb), len(txt_emb), len(labels)
    if not n_img == n_txt == n_lab:
        raise InputError(f"paired split expected: {n_img} image embeddings, "
                         f"{n_txt} text embeddings and {n_lab} labels")
    # one ranking per direction serves both mAP@all and mAP@k
    i2t, t2i = ([float(a.mean()) for a in aps]
                for aps in _both_directions(img_emb, txt_emb, labels, (None, k), chunk_size))
    out = {}
    for j, suffix in enumerate(("", str(k))):
        out[f"map{suffix}_img2txt"], out[f"map{suffix}_txt2img"] = i2t[j], t2i[j]
        out[f"map{suffix}_avg"] = (i2t[j] + t2i[j]) / 2
    return out


def chance_map(labels):
    """Expected mAP@all of a random ranking, when queries and gallery are the pairs of one
    split with these class ids (n,): what mAP means "no better than chance" for them.

    A query whose class has R of the n gallery items (itself included) has, over a
    uniformly random order of the gallery, expected AP

      E[AP] = (1/n) sum_(r=1..n) (1 + (r - 1)(R - 1)/(n - 1)) / r

    (tutorial 8 derives it); mAP averages that over the queries, class by class. Host
    NumPy in, a float out; it depends on the class sizes only (1/c for c balanced classes
    only as n grows)."""
    labels = numpy.asarray(labels)
    if labels.ndim != 1 or labels.size < 2 or not numpy.issubdtype(labels.dtype, numpy.integer) \
            or labels.min() < 0:
        raise InputError(f"chance_map: expected at least 2 non-negative integer class ids (n,), got shape "
                         f"{labels.shape} and dtype {labels.dtype}")
    n = len(labels)
    counts = numpy.bincount(labels)    # (an unused class id has count 0: weight 0 below)
    r = numpy.arange(1, n + 1)
    ap = numpy.array([((1 + (r - 1) * (R - 1) / (n - 1)) / r).sum() / n for R in counts])
    return float(counts @ ap / n)      # each class's expected AP, weighted by its queries
