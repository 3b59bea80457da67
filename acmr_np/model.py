"""The ACMR model and its objective, forward and backward (Wang et al., ACM MM 2017).

Parts, with the paper's names:

    image  v --[img_projector: standardise, Linear+tanh, ...]--> s_v  \\
                                                                       > common space S (m-d)
    text   t --[txt_projector: standardise, Linear+tanh, ...]--> s_t  /
    s --[label_classifier: Linear m->c, softmax]--> class     (L_imd, Eq. 2; or one
                                                               sigmoid per label)
    s --[GRL]--[modality_classifier: m->50->2]--> modality    (L_adv, Eq. 1)
    (s_v, s_t) triplets --> L_imi (Eqs. 3-6);  projector weights --> L_reg (Eq. 7)

The "embedding player" (both projectors and the label classifier) minimises
L_emb - lambda L_adv (Eq. 9), with L_emb = alpha L_imi + beta L_imd + L_reg (Eq. 8);
the modality classifier minimises L_adv (Eq. 10). The gradient reversal layer makes
one backward pass deliver both: the modality classifier's gradient of L_adv, and, below
the GRL, -lambda times it for the projectors. The authors' demo never let that reversed
gradient reach the projectors; here it does, and tests/test_model.py checks it.
One step of the game (Algorithm 1) is in trainer.py.

Every input is a RAW feature: each projector starts with a Standardize layer holding the
training set's per-feature mean and standard deviation, so training, evaluation and new
data go through the same map, and there is no way to forget it.
"""
import numpy

from . import losses, triplets
from .backend import to_host
from .config import ACMRConfig
from .layers import GradientReversal, L2Normalize, Linear, Standardize, Tanh

__all__ = ["ACMR", "ACMRConfig", "MLP", "Projector"]


class MLP:
    """Linear layers, each followed by tanh except (optionally) the last.

    dims = [d_in, h_1, ..., d_out]; forward: (N, d_in) -> (N, d_out).
    Parameters are named "<layer index>.W" / "<layer index>.b".
    input_grad=False: the input is data, so backward skips dL/dx (the first layer's
    largest product) and returns None.
    """

    def __init__(self, dims, *, rng, xp, dtype, last_tanh=True, input_grad=True):
        self.layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            self.layers.append(Linear(a, b, rng=rng, xp=xp, dtype=dtype))
            if last_tanh or i < len(dims) - 2:
                self.layers.append(Tanh())
        self.layers[0].input_grad = bool(input_grad)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def linears(self):
        """The Linear layers, whose weight matrices (not biases) L_reg penalises."""
        return [layer for layer in self.layers if isinstance(layer, Linear)]

    def named(self, which):
        """{"<i>.<name>": array} for which = "params" or "grads"."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers)
                for k, v in getattr(layer, which).items()}


class Projector(MLP):
    """A feature projector, f_V or f_T: raw features -> Standardize -> Linear+tanh layers.

    d_in -> hidden widths -> dim, tanh on every layer (the paper's projectors).
    forward: raw x (N, d_in), any float dtype, host or device -> (N, dim) on the model's
    backend. Its input is data, so backward returns None.
    """

    def __init__(self, d_in, hidden, dim, *, rng, xp, dtype):
        super().__init__([d_in, *hidden, dim], rng=rng, xp=xp, dtype=dtype, input_grad=False)
        self.standardize = Standardize(d_in, xp=xp, dtype=dtype)

    def forward(self, raw):
        return super().forward(self.standardize.forward(raw))


class ACMR:
    """The model: projectors, label classifier, GRL and modality classifier.

    d_img, d_txt: input sizes; n_classes: c; config: an ACMRConfig. Parameters are
    created on ``xp`` in ``dtype`` from ``rng`` (host draws, so both backends start from
    identical numbers). ``ACMR.for_data`` also fits the input standardisation.
    """

    EMBEDDING_PARTS = ("img_projector", "txt_projector", "label_classifier")  # the "generator", Eq. 9
    ADVERSARY_PARTS = ("modality_classifier",)                                # the "discriminator", Eq. 10
    L_REG_PARTS = ("img_projector", "txt_projector")                          # L_reg penalises their weights, Eq. 7
    PARTS = EMBEDDING_PARTS + ADVERSARY_PARTS

    def __init__(self, d_img, d_txt, n_classes, config=None, *, rng, xp=numpy, dtype=numpy.float32):
        config = ACMRConfig() if config is None else config
        if not isinstance(config, ACMRConfig):
            raise TypeError(f"ACMR: config must be an ACMRConfig, got {type(config).__name__}")
        for name, v in (("d_img", d_img), ("d_txt", d_txt), ("n_classes", n_classes)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"ACMR: {name} must be a positive integer, got {v!r}")
        if n_classes < 2:
            raise ValueError(f"ACMR: n_classes must be at least 2, got {n_classes}")
        self.config, self.xp, self.dtype = config, xp, numpy.dtype(dtype)
        self.d_img, self.d_txt, self.n_classes = int(d_img), int(d_txt), int(n_classes)
        c = config
        self.img_projector = Projector(d_img, c.img_hidden, c.dim, rng=rng, xp=xp, dtype=dtype)
        self.txt_projector = Projector(d_txt, c.txt_hidden, c.dim, rng=rng, xp=xp, dtype=dtype)
        self.label_classifier = MLP([c.dim, n_classes], rng=rng, xp=xp, dtype=dtype, last_tanh=False)
        self.img_normalize, self.txt_normalize = L2Normalize(), L2Normalize()
        self.grl = GradientReversal(c.lam)
        self.modality_classifier = MLP([c.dim, c.disc_hidden, 2], rng=rng, xp=xp, dtype=dtype, last_tanh=False)

    @classmethod
    def for_data(cls, data, config=None, *, rng, xp=numpy, dtype=numpy.float32):
        """The model sized for a data set (anything with d_img, d_txt, n_classes and a
        train split), its input standardisation fitted on the training split: how every
        training run builds it."""
        model = cls(data.d_img, data.d_txt, data.n_classes, config, rng=rng, xp=xp, dtype=dtype)
        model.img_projector.standardize.fit(data.train.img)
        model.txt_projector.standardize.fit(data.train.txt)
        return model

    # ---- parameters and their state ----------------------------------------------
    def named(self, which, parts=PARTS):
        """{"<part>.<i>.<name>": array} for which = "params" or "grads"."""
        return {f"{p}.{k}": v for p in parts for k, v in getattr(self, p).named(which).items()}

    def l_reg_weights(self):
        """The names, as in named("params"), of the weights L_reg (Eq. 7) penalises: the
        weight matrices of the L_REG_PARTS' Linear layers."""
        return [f"{part}.{i}.W" for part in self.L_REG_PARTS
                for i, layer in enumerate(getattr(self, part).layers) if isinstance(layer, Linear)]

    def _state_arrays(self):
        out = dict(self.named("params"))
        for part in ("img_projector", "txt_projector"):
            std = getattr(self, part).standardize
            out[f"{part}.standardize.mean"], out[f"{part}.standardize.std"] = std.mean, std.std
        return out

    def state_dict(self):
        """Host copies of everything that defines the trained model: every parameter and
        the input standardisation. Keys as in named("params"), plus
        "<projector>.standardize.mean" / ".std"."""
        return {k: to_host(v).copy() for k, v in self._state_arrays().items()}

    def check_state_dict(self, d):
        """Raise ValueError unless ``d`` has exactly this model's names and shapes."""
        targets = self._state_arrays()
        if set(d) != set(targets):
            raise ValueError(f"the saved model does not fit: missing {sorted(set(targets) - set(d))[:5]}, "
                             f"unexpected {sorted(set(d) - set(targets))[:5]}")
        for k, a in targets.items():
            if tuple(d[k].shape) != tuple(a.shape):
                raise ValueError(f"the saved model does not fit: {k} has shape {tuple(d[k].shape)}, "
                                 f"this model's {tuple(a.shape)}")

    def load_state_dict(self, d):
        """Copy what ``state_dict`` returned into the model (checked first, see above)."""
        self.check_state_dict(d)
        for k, a in self._state_arrays().items():
            a[...] = self.xp.asarray(d[k], dtype=a.dtype)

    # ---- embeddings --------------------------------------------------------------
    def _embed(self, projector, raw, chunk_size):
        if not hasattr(raw, "ndim"):  # a list of rows, say: as an array (device arrays have ndim)
            raw = numpy.asarray(raw)
        if raw.ndim != 2 or raw.shape[0] == 0:
            raise ValueError(f"expected features of shape (n, d) with n >= 1, got {tuple(raw.shape)}")
        if isinstance(raw, numpy.ndarray) and not numpy.isfinite(raw).all():
            # host features only: checking device arrays would wait for the device
            row, col = numpy.argwhere(~numpy.isfinite(raw))[0]
            raise ValueError(f"features must be finite: row {row}, column {col} holds {raw[row, col]}")
        return self.xp.concatenate([projector.forward(raw[i:i + chunk_size])
                                    for i in range(0, raw.shape[0], chunk_size)])

    def embed_images(self, img, chunk_size=4096):
        """Raw image features (n, d_img), host or device -> their points in the common
        space (n, m) on the model's backend, in chunks of chunk_size rows. Host features
        holding NaN or inf are refused (ValueError); device arrays are not checked."""
        return self._embed(self.img_projector, img, chunk_size)

    def embed_texts(self, txt, chunk_size=4096):
        """Raw text features (n, d_txt) -> (n, m), as embed_images."""
        return self._embed(self.txt_projector, txt, chunk_size)

    def embed(self, img, txt, chunk_size=4096):
        """Both modalities of a split: (embed_images(img), embed_texts(txt))."""
        return self.embed_images(img, chunk_size), self.embed_texts(txt, chunk_size)

    # ---- the objective and its gradient, by hand ---------------------------------
    def _imi_one_direction(self, anchor, other, labels, noise):
        """L_imi,V (Eq. 4) for image anchors, or L_imi,T (Eq. 5) for text anchors.
        anchor, other (B, m) -> (loss, d_anchor (B, m), d_other (B, m))."""
        c, B = self.config, anchor.shape[0]
        pos_idx, neg_idx, has_negative = triplets.sample(anchor, other, labels, noise, c.sampling)
        P = triplets.selection_matrix(pos_idx, B, anchor.dtype)
        Q = triplets.selection_matrix(neg_idx, B, anchor.dtype)
        if c.triplet == "hinge":
            loss, (d_a, d_p, d_q) = losses.triplet_hinge(anchor, P @ other, Q @ other, c.margin,
                                                         mask=has_negative)
        else:
            loss, (d_a, d_p, d_q) = losses.pull_push(anchor, P @ other, Q @ other, c.margin,
                                                     c.push_weight, mask=has_negative)
        # picked = P @ other  =>  d_other = P^T d_picked (sums over anchors sharing an item)
        return loss, d_a, P.T @ d_p + Q.T @ d_q

    def _label_loss(self, logits, labels):
        """L_imd's cross-entropy (Eq. 2), mean over the rows of logits (N, c): for class
        ids labels (N,) or 0/1 label rows (N, c) (multi-label data), by
        config.label_loss: "softmax" against the label vector normalised to sum 1
        (label_losses.softmax_label_cross_entropy; for class ids the plain
        softmax_cross_entropy, the same loss on one-hot vectors) or "sigmoid", one
        binary cross-entropy per label (label_losses.sigmoid_cross_entropy).
        Returns (loss, dlogits). No value checks (the data was checked when loaded):
        nothing here waits for the GPU."""
        xp = self.xp
        if labels.ndim == 1:
            if self.config.label_loss == "softmax":
                return losses.softmax_cross_entropy(logits, labels, check_values=False)
            labels = labels[:, None] == xp.arange(logits.shape[1])[None, :]  # one-hot rows
        # imported here: a classroom copy leaves label_losses out (it derives the softmax
        # exercise's gradient) and then trains single-label data with softmax only
        from . import label_losses
        if self.config.label_loss == "softmax":
            return label_losses.softmax_label_cross_entropy(logits, labels, check_values=False)
        return label_losses.sigmoid_cross_entropy(logits, labels, check_values=False)

    def loss_and_grads(self, img, txt, labels, noise, lam, l_reg=True):
        """Forward both modalities, every loss, and the full backward pass.

        img (B, d_img), txt (B, d_txt): RAW features of B pairs (each projector
        standardises its input); labels (B,) integer class ids, or (B, c) 0/1 label
        rows for multi-label data, on the model's backend;
        noise (2, B, B) uniform noise for triplet sampling (anchors whose batch holds no
        other class are left out of L_imi by triplets.sample's mask), or None to leave
        L_imi out; lam: the GRL's lambda for this step.
        Fills every layer's grads:
          embedding player:     d/dtheta [alpha L_imi + beta L_imd + L_reg] - lam dL_adv/dtheta
          modality classifier:  dL_adv/dtheta_D
        Returns a dict of 0-d arrays on the model's backend: L_imi, L_imd, L_reg, L_adv,
        adv_acc (the modality classifier's accuracy on the batch).
        l_reg=False leaves L_reg out (no "L_reg" key, no gradient): for the fast path,
        whose optimiser applies it (acmr_np.fast.FastTrainer).
        """
        c, xp = self.config, self.xp
        B = img.shape[0]
        # BEGIN SOLUTION
        # 1. Project both modalities into the common space S.
        s_v = self.img_projector.forward(img)
        s_t = self.txt_projector.forward(txt)
        s = xp.concatenate([s_v, s_t])                       # (2B, m): images, then texts

        # 2. L_imd (Eq. 2): the shared label classifier on both modalities. Eq. 2 sums
        #    the two modalities' cross-entropies and averages over pairs, i.e. twice the
        #    mean over the 2B rows. (_label_loss: class ids or label vectors, softmax or
        #    sigmoid, as config.label_loss says.)
        class_logits = self.label_classifier.forward(s)
        # (check_values=False: the labels were checked once, when the data was loaded;
        #  checking them here would make every step wait for the GPU)
        l_imd, d_class_logits = self._label_loss(class_logits, xp.concatenate([labels, labels]))
        l_imd, d_class_logits = 2 * l_imd, 2 * d_class_logits

        # 3. L_imi (Eqs. 3-6): triplets across modalities, both directions. With
        #    distance="cosine" the squared distance between s_v and s_t is taken between
        #    unit-length embeddings (= 2 - 2 cos), the geometry retrieval is evaluated in.
        if noise is not None and c.alpha > 0:
            u_v, u_t = s_v, s_t
            if c.distance == "cosine":
                u_v, u_t = self.img_normalize.forward(s_v), self.txt_normalize.forward(s_t)
            l_imi_v, d_uv, d_ut_from_v = self._imi_one_direction(u_v, u_t, labels, noise[0])
            l_imi_t, d_ut, d_uv_from_t = self._imi_one_direction(u_t, u_v, labels, noise[1])
            l_imi = l_imi_v + l_imi_t
            d_uv, d_ut = d_uv + d_uv_from_t, d_ut + d_ut_from_v
            if c.distance == "cosine":
                d_uv, d_ut = self.img_normalize.backward(d_uv), self.txt_normalize.backward(d_ut)
            d_s_imi = xp.concatenate([d_uv, d_ut])
        else:
            l_imi, d_s_imi = xp.zeros((), s.dtype), xp.zeros_like(s)

        # 4. L_adv (Eq. 1): the modality classifier behind the gradient reversal layer.
        #    Images carry modality label 0, texts label 1; same factor 2 as in step 2.
        self.grl.lam = lam
        modality = xp.concatenate([xp.zeros(B, xp.int64), xp.ones(B, xp.int64)])
        mod_logits = self.modality_classifier.forward(self.grl.forward(s))
        l_adv, d_mod_logits = losses.softmax_cross_entropy(mod_logits, modality, check_values=False)
        l_adv, d_mod_logits = 2 * l_adv, 2 * d_mod_logits
        adv_acc = (xp.argmax(mod_logits, axis=1) == modality).mean(dtype=s.dtype)  # not float64
        terms = {"L_imi": l_imi, "L_imd": l_imd, "L_adv": l_adv, "adv_acc": adv_acc}

        # 5. L_reg (Eq. 7) on the projectors' weight matrices.
        reg_layers = [layer for part in self.L_REG_PARTS for layer in getattr(self, part).linears()]
        if l_reg:
            terms["L_reg"], d_reg = losses.l2_penalty([layer.params["W"] for layer in reg_layers], c.l2)

        # ---- backward: every layer by hand, from the losses down to the inputs ----
        # dL_emb/ds from the label classifier (weighted by beta), and from the modality
        # classifier through the GRL, which turns +dL_adv/ds into -lam dL_adv/ds.
        d_s = self.label_classifier.backward(c.beta * d_class_logits)
        d_s += self.grl.backward(self.modality_classifier.backward(d_mod_logits))
        d_s += c.alpha * d_s_imi
        self.img_projector.backward(d_s[:B])
        self.txt_projector.backward(d_s[B:])
        if l_reg:
            for layer, d_w in zip(reg_layers, d_reg):
                layer.grads["W"] += d_w                         # L_reg's share of the gradient
        return terms
        # END SOLUTION
