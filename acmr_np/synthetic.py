"""A synthetic paired dataset: Wikipedia-sized, learnable, and not linearly solvable.

``make_synthetic(seed)`` needs no files; ``load_dataset(None)`` returns it. Its arrays
depend only on the arguments (the same seed gives the same numbers, bit for bit).
"""
import numpy as np

from .datasets import build_dataset, check_seed_and_fraction
from .errors import input_error as _fail


DZ = 12  # the size of the shared latent z


def _modalities(z, d_img, d_txt, rng):
    """Image and text features (n, d_img), (n, d_txt) of latents z (n, DZ), as in
    make_synthetic's docstring: tanh (image) and sin (text) maps of z, per-modality
    nuisance and noise, all drawn from ``rng`` in this order."""
    n, dz, n_nuis = len(z), z.shape[1], 4
    a1 = rng.normal(size=(dz, 32)) * (1.5 / np.sqrt(dz))
    a2 = rng.normal(size=(32, d_img)) / np.sqrt(32)
    b1 = rng.normal(size=(dz, 24)) * (0.7 / np.sqrt(dz))
    b2 = rng.normal(size=(24, d_txt)) / np.sqrt(24)
    n_img = rng.normal(size=(n_nuis, d_img)) * (0.7 / np.sqrt(n_nuis))
    n_txt = rng.normal(size=(n_nuis, d_txt)) * (0.3 / np.sqrt(n_nuis))
    img = np.tanh(z @ a1) @ a2 + rng.normal(size=(n, n_nuis)) @ n_img + 0.3 * rng.normal(size=(n, d_img))
    txt = np.sin(z @ b1) @ b2 + rng.normal(size=(n, n_nuis)) @ n_txt + 0.3 * rng.normal(size=(n, d_txt))
    return img, txt


def make_synthetic(seed=0, n_train=2000, n_test=700, n_classes=10, d_img=128, d_txt=24, *,
                   val_fraction=0.1):
    """A Wikipedia-sized paired dataset that a linear map cannot solve but a small MLP can.

    Generative process (all from ``np.random.default_rng(seed)``; labels balanced):

        class k has 3 sub-centres  m_k1, m_k2, m_k3 ~ N(0, 1.2^2 I_12)
        pair i:   y_i = its class, s_i ~ uniform{1, 2, 3}
                  z_i = m_{y_i s_i} + 0.7 * N(0, I_12)               shared latent, 12-d
        image:    img_i = tanh(z_i A1) A2 + u_i N_img + 0.3 * N(0, I)  (d_img)
                  A1: 12 x 32 (entries N(0, 1.5^2 / 12)), A2: 32 x d_img
        text:     txt_i = sin(z_i B1) B2 + w_i N_txt + 0.3 * N(0, I)   (d_txt)
                  B1: 12 x 24 (entries N(0, 0.7^2 / 12)), B2: 24 x d_txt
        nuisance: u_i, w_i ~ N(0, I_4) independent per modality, mapped with scale
                  0.7 (image) and 0.3 (text): variation unrelated to class or partner.

    The two modalities meet only through z (class and within-class position). The
    sub-centres make each class multi-modal, so class means and linear boundaries fit
    it poorly; tanh saturates and sin folds, so no linear map relates the modalities.
    Measured on seed 0 (fit on all 2000 training pairs, scored on the 700 test pairs),
    test accuracy image / text: nearest class mean 55% / 46%, softmax regression
    82% / 59%, a 32-unit tanh MLP 90% / 72%. Cross-modal mAP@all with cosine
    (img->txt / txt->img): random embeddings 0.11, CCA (10-d) 0.31 / 0.31, the two
    softmax regressions' posteriors 0.53 / 0.55, the two MLPs' posteriors 0.70 / 0.71.

    The training pairs are then split as ``load_dataset`` does: a stratified
    ``val_fraction`` of them becomes validation (same generator, continued).
    """
    check_seed_and_fraction(seed, val_fraction)
    for arg, v, lo in (("n_classes", n_classes, 2), ("n_train", n_train, 2 * n_classes),
                       ("n_test", n_test, 1), ("d_img", d_img, 1), ("d_txt", d_txt, 1)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise _fail(f"make_synthetic: {arg} must be an integer >= {lo}, got {v!r}")
    rng = np.random.default_rng(seed)
    dz, n_sub = DZ, 3
    # balanced labels per split, so every class is in train (twice at least, for validation)
    y = np.concatenate([rng.permutation(np.arange(n_train) % n_classes),
                        rng.permutation(np.arange(n_test) % n_classes)])
    n = len(y)
    centres = rng.normal(0.0, 1.2, (n_classes, n_sub, dz))
    z = centres[y, rng.integers(n_sub, size=n)] + 0.7 * rng.normal(size=(n, dz))
    img, txt = _modalities(z, d_img, d_txt, rng)

    tr, te = slice(0, n_train), slice(n_train, n)
    parts = {"train": (img[tr], txt[tr], y[tr], ("train img", "train txt", "train labels")),
             "test": (img[te], txt[te], y[te], ("test img", "test txt", "test labels"))}
    defaults = dict(n_train=2000, n_test=700, n_classes=10, d_img=128, d_txt=24)
    given = dict(n_train=n_train, n_test=n_test, n_classes=n_classes, d_img=d_img, d_txt=d_txt)
    name = ", ".join([f"seed={seed}"] + [f"{k}={v}" for k, v in given.items() if v != defaults[k]])
    # labels 0..c-1 map to themselves; the carved validation part continues the generator
    return build_dataset(parts, where="make_synthetic", name=f"synthetic({name})", val_fraction=val_fraction,
                         rng=rng)


def make_synthetic_multilabel(seed=0, n_train=2000, n_test=700, n_classes=12, d_img=128, d_txt=24, *,
                              max_labels=3, val_fraction=0.1):
    """A multi-label paired dataset with known structure: every pair has 1 to
    ``max_labels`` labels, and its two modalities are nonlinear views of the mean of its
    labels' centres (labels as a 0/1 matrix (n, n_classes), the layout of MIRFlickr or
    NUS-WIDE). For tests and examples of multi-label retrieval.

    Generative process (all from ``np.random.default_rng(seed)``):

        label l has a centre m_l ~ N(0, 1.5^2 I_12)
        pair i:   a primary label p_i, balanced over labels (so every label is in
                  train), k_i ~ uniform{1, ..., max_labels} labels in all: p_i and
                  k_i - 1 others drawn uniformly without repeats; y_i their 0/1 row
                  z_i = (sum_l y_il m_l) / k_i + 0.5 * N(0, I_12)     shared latent
        image, text: as in make_synthetic (tanh and sin maps of z_i, per-modality
                  nuisance and noise), with new random maps.

    Two pairs are relevant to each other when they share a label (the protocol of
    metrics.py for label matrices). A pair with labels {a, b} lies between the centres
    of a and b, near both label's other pairs. The validation part is carved from
    train by iterative stratification (splits.iterative_stratified_split).
    """
    check_seed_and_fraction(seed, val_fraction)
    for arg, v, lo in (("n_classes", n_classes, 2), ("n_train", n_train, 2 * n_classes),
                       ("n_test", n_test, 1), ("d_img", d_img, 1), ("d_txt", d_txt, 1),
                       ("max_labels", max_labels, 1)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise _fail(f"make_synthetic_multilabel: {arg} must be an integer >= {lo}, got {v!r}")
    if max_labels > n_classes:
        raise _fail(f"make_synthetic_multilabel: max_labels must be at most n_classes={n_classes}, "
                    f"got {max_labels}")
    rng = np.random.default_rng(seed)
    primary = np.concatenate([rng.permutation(np.arange(n_train) % n_classes),
                              rng.permutation(np.arange(n_test) % n_classes)])
    n = len(primary)
    k = rng.integers(1, max_labels + 1, size=n)
    # k_i labels per row without a loop: rank random keys, the primary label's key lowest
    keys = rng.random((n, n_classes))
    keys[np.arange(n), primary] = -1.0
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)
    y = (rank < k[:, None]).astype(np.uint8)                     # (n, c), k_i ones in row i
    centres = rng.normal(0.0, 1.5, (n_classes, DZ))
    z = (y @ centres) / k[:, None] + 0.5 * rng.normal(size=(n, DZ))
    img, txt = _modalities(z, d_img, d_txt, rng)

    tr, te = slice(0, n_train), slice(n_train, n)
    parts = {"train": (img[tr], txt[tr], y[tr], ("train img", "train txt", "train labels")),
             "test": (img[te], txt[te], y[te], ("test img", "test txt", "test labels"))}
    defaults = dict(n_train=2000, n_test=700, n_classes=12, d_img=128, d_txt=24, max_labels=3)
    given = dict(n_train=n_train, n_test=n_test, n_classes=n_classes, d_img=d_img, d_txt=d_txt,
                 max_labels=max_labels)
    name = ", ".join([f"seed={seed}"] + [f"{k}={v}" for k, v in given.items() if v != defaults[k]])
    return build_dataset(parts, where="make_synthetic_multilabel", name=f"synthetic_multilabel({name})",
                         val_fraction=val_fraction, rng=rng)
