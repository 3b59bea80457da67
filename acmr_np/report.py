"""What a run prints and writes as text: the epoch line, the table of test results, and
retrieval examples (the top results of a few queries, marked relevant or not).

- ``format_epoch`` / ``format_table``: the lines ``python -m acmr_np.train`` prints;
- ``pick_queries``: a few query indices from different classes;
- ``retrieval_examples`` / ``write_examples``: the classes of the top-k results of those
  queries in both directions, as plain text (``write_examples`` writes it atomically).

No matplotlib here: this module works wherever the package does. The figures are in
acmr_np.plots.
"""
import os
from types import SimpleNamespace

import numpy

from .backend import to_host
from .errors import InputError
from .files import write_text
from .ranking import rank_gallery

RELEVANT, NOT_RELEVANT = "\u2713", "\u2717"  # check mark and ballot x
DIRECTIONS = (("img2txt", "image \u2192 text"), ("txt2img", "text \u2192 image"))


# ---- the command line's lines ----------------------------------------------------------

def format_epoch(row, epochs):
    """One line for one epoch of ``training.History`` (fit's second result; keys epoch, L_imi, L_imd, L_reg, L_adv,
    lam, adv_acc, val_map, seconds), out of ``epochs``."""
    return (f"epoch {row['epoch']:3d}/{epochs}  L_imi {row['L_imi']:.4f}  L_imd {row['L_imd']:.4f}  "
            f"L_reg {row['L_reg']:.4f}  L_adv {row['L_adv']:.4f}  lambda {row['lam']:.4f}  "
            f"adv_acc {row['adv_acc']:.3f}  val_mAP {row['val_map']:.4f}  {row['seconds']:.2f}s")


def format_table(metrics, n_test, title="test"):
    """mAP@all and mAP@50 in both directions and their average, as three lines.
    metrics: the dict of ``metrics.evaluate_retrieval`` (k = 50); n_test: pairs scored."""
    return (f"{title} ({n_test} pairs)   img->txt  txt->img   average\n"
            f"  mAP@all            {metrics['map_img2txt']:8.4f}  {metrics['map_txt2img']:8.4f}  {metrics['map_avg']:8.4f}\n"
            f"  mAP@50             {metrics['map50_img2txt']:8.4f}  {metrics['map50_txt2img']:8.4f}  {metrics['map50_avg']:8.4f}")


# ---- retrieval examples ------------------------------------------------------------------

def host_pair(pair, name):
    """(img_emb, txt_emb) on any backend -> two host float64 arrays (n, m), (n', m) of
    one width m; ``name`` says which pair in the InputError otherwise."""
    try:
        img, txt = pair
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a pair (img_emb, txt_emb)") from None
    img, txt = (numpy.asarray(to_host(a), dtype=numpy.float64) for a in (img, txt))
    if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
        raise InputError(f"{name}: expected image and text embeddings (n, m) of one width m, "
                         f"got shapes {img.shape} and {txt.shape}")
    return img, txt


def first_labels(labels):
    """The class of each item (N,), or for 0/1 label rows (N, c) each row's first label
    (its lowest label column): how multi-label items are grouped for queries and colours."""
    labels = numpy.asarray(to_host(labels))
    return labels.argmax(axis=1) if labels.ndim == 2 else labels


def pick_queries(labels, n=4):
    """n query indices from n different classes spread over the label range: for each
    chosen class, its first item. labels (N,), any backend; for label rows (N, c) the
    classes are the rows' first labels (``first_labels``). Deterministic."""
    labels = first_labels(labels)
    classes = numpy.unique(labels)
    chosen = classes[numpy.unique(numpy.linspace(0, len(classes) - 1, min(n, len(classes))).round().astype(int))]
    return [int(numpy.flatnonzero(labels == c)[0]) for c in chosen]


def retrieval_examples(img_emb, txt_emb, labels, queries, k=10, class_names=None, title=None):
    """For each query index, both directions: the classes of the top-k results.

    img_emb (n, m), txt_emb (n, m), labels (n,) of one paired split (any backend);
    queries: indices into it. Query i is image i (ranking all texts) and text i
    (ranking all images), ranked by ``ranking.rank_gallery``: cosine similarity, equal
    similarities in gallery order, exactly the ranking the metrics score. Each result
    is printed as its class followed by ✓ (same class as the query: relevant) or ✗.
    For multi-label data (labels as 0/1 rows (n, c)) each item shows its labels joined
    by "+" (e.g. 2+7), and ✓ means it shares a label with the query. Returns text.
    """
    img, txt = host_pair((img_emb, txt_emb), "embeddings")
    labels = numpy.asarray(to_host(labels))
    n = len(labels)
    if not len(img) == len(txt) == n:
        raise InputError(f"{len(img)} image and {len(txt)} text embeddings for {n} "
                         f"{'label rows' if labels.ndim == 2 else 'labels'}")
    queries = [int(q) for q in queries]
    bad = [q for q in queries if not 0 <= q < n]
    if bad:
        raise InputError(f"query indices {bad} are outside 0..{n - 1}")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    k = min(int(k), n)
    kind = (_label_rows if labels.ndim == 2 else _class_ids)(labels, class_names)

    width = len(str(n - 1))
    lines = [title] if title else []
    lines += [f"Top {k} results of each query by cosine similarity, best first: {kind.legend}"]
    if class_names is not None:
        lines.append(f"{kind.names}: " + ", ".join(f"{i} {c}" for i, c in enumerate(class_names)))
    for key, direction in DIRECTIONS:
        q_emb, g_emb = (img, txt) if key == "img2txt" else (txt, img)
        q_word = "image" if key == "img2txt" else "text "
        lines += ["", direction]
        top = rank_gallery(q_emb[queries], g_emb, top=k)              # (len(queries), k)
        for q, ranked in zip(queries, top):
            rel = kind.relevant(ranked, q)
            marks = " ".join(f"{kind.result(j)}{RELEVANT if r else NOT_RELEVANT}" for j, r in zip(ranked, rel))
            lines.append(f"  {q_word} {q:>{width}}  {kind.query(q)}  "
                         f"{int(rel.sum()):>{len(str(k))}}/{k} relevant:  {marks}")
    return "\n".join(lines) + "\n"


def _class_ids(labels, class_names):
    """How retrieval_examples shows class ids (n,): relevant = the same class."""
    if class_names is not None and len(class_names) <= int(labels.max()):
        raise InputError(f"{len(class_names)} class names for labels up to {int(labels.max())}")
    cw = len(str(int(labels.max())))                                  # widths that keep columns aligned
    nw = max(len(str(c)) for c in class_names) if class_names is not None else 0
    return SimpleNamespace(
        legend=f"the class of each result, {RELEVANT} = same class as the query (relevant), "
               f"{NOT_RELEVANT} = another class.", names="classes",
        relevant=lambda ranked, q: labels[ranked] == labels[q],
        result=lambda j: f"{int(labels[j]):>{cw}}",
        query=lambda q: f"class {int(labels[q]):>{cw}}"
                        + (f" {class_names[labels[q]]:<{nw}}" if class_names is not None else ""))


def _label_rows(labels, class_names):
    """How retrieval_examples shows 0/1 label rows (n, c): label sets, relevant = shares a label."""
    c = labels.shape[1]
    if class_names is not None and len(class_names) < c:
        raise InputError(f"{len(class_names)} class names for {c} label columns")
    has = labels != 0

    def labels_of(i, names=False):
        cols = numpy.flatnonzero(has[i]).tolist()
        if names and class_names is not None:
            return "+".join(f"{j} {class_names[j]}" for j in cols)
        return "+".join(map(str, cols))

    return SimpleNamespace(
        legend=f"the labels of each result, {RELEVANT} = shares a label with the query (relevant), "
               f"{NOT_RELEVANT} = shares none.", names="labels",
        relevant=lambda ranked, q: (has[ranked] & has[q]).any(axis=1),
        result=labels_of, query=lambda q: f"labels {labels_of(q, names=True)}")


def write_examples(img_emb, txt_emb, labels, queries, path, k=10, class_names=None, title=None):
    """``retrieval_examples`` written atomically to ``path`` (UTF-8); returns ``path``."""
    write_text(path, retrieval_examples(img_emb, txt_emb, labels, queries, k, class_names, title))
    return os.fspath(path)
