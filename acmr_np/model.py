"""The ACMR model and one step of its minimax training (Wang et al., ACM MM 2017).

Parts, with the paper's names:

    image  v --[img_projector: Linear+tanh, ...]--> s_v  \\
                                                          > common space S (m-d)
    text   t --[txt_projector: Linear+tanh, ...]--> s_t  /
    s --[label_classifier: Linear m->c, softmax]--> class     (L_imd, Eq. 2)
    s --[GRL]--[modality_classifier: m->50->2]--> modality    (L_adv, Eq. 1)
    (s_v, s_t) triplets --> L_imi (Eqs. 3-6);  projector weights --> L_reg (Eq. 7)

The "embedding player" (both projectors and the label classifier) minimises
L_emb - lambda L_adv (Eq. 9), with L_emb = alpha L_imi + beta L_imd + L_reg (Eq. 8);
the modality classifier minimises L_adv (Eq. 10). The gradient reversal layer makes
one backward pass deliver both: the modality classifier's gradient of L_adv, and, above
the GRL, -lambda times it for the projectors. The authors' demo never let that reversed
gradient reach the projectors; here it does, and tests/test_model.py checks it.

Inputs are standardised with the training set's per-feature mean and standard
deviation, kept in the model (``input_stats``) so that evaluation on new data applies
exactly the same map; tanh layers need inputs of unit scale, and the classic Wikipedia
features are histograms whose entries are around 1/128.
"""
import math
from dataclasses import asdict, dataclass

import numpy

from . import losses, triplets
from .backend import to_device, to_host
from .errors import InputError
from .layers import GradientReversal, L2Normalize, Linear, Tanh
from .optim import Adam

TRIPLET_FORMS = ("hinge", "pull_push")
DISTANCES = ("cosine", "euclidean")
LAMBDA_SCHEDULES = ("constant", "dann")


@dataclass
class ACMRConfig:
    """Every setting of the model and its training step. Defaults: see docs/ and
    README (chosen on the Wikipedia validation split, never on test)."""
    img_hidden: tuple = (512,)      # hidden widths of the image projector
    txt_hidden: tuple = (128,)      # hidden widths of the text projector
    dim: int = 64                   # m, the size of the common space
    disc_hidden: int = 50           # the modality classifier's hidden width (paper: 50)
    alpha: float = 2.0              # weight of L_imi (Eq. 8)
    beta: float = 1.0               # weight of L_imd (Eq. 8)
    l2: float = 1e-3                # L_reg coefficient: l2 * sum ||W||_F^2 (Eq. 7)
    triplet: str = "hinge"          # "hinge": max(0, mu + l2(a,p) - l2(a,n)); "pull_push": Eqs. 4-5
    sampling: str = "random"        # triplets.STRATEGIES
    distance: str = "cosine"        # L_imi on unit-length embeddings ("cosine") or raw ones
    margin: float = 1.5             # mu
    push_weight: float = 1.0        # lambda_t of Eqs. 4-5 (pull_push only)
    lam: float = 0.05               # lambda (paper: 0.05), the GRL's scale at full schedule
    lam_schedule: str = "dann"      # "constant" or the DANN ramp lam * (2/(1+exp(-10p)) - 1)
    k: int = 5                      # projector steps per modality-classifier step (Alg. 1)
    lr: float = 1e-3                # Adam learning rate, both players
    lr_adv: float = 0.0             # modality classifier's learning rate; 0 = same as lr

    def __post_init__(self):
        self.img_hidden = tuple(int(w) for w in self.img_hidden)
        self.txt_hidden = tuple(int(w) for w in self.txt_hidden)
        checks = [
            (all(w > 0 for w in self.img_hidden + self.txt_hidden) and self.dim > 0 and self.disc_hidden > 0,
             "layer widths must be positive"),
            (self.triplet in TRIPLET_FORMS, f"triplet must be one of {', '.join(TRIPLET_FORMS)}, got {self.triplet!r}"),
            (self.sampling in triplets.STRATEGIES,
             f"sampling must be one of {', '.join(triplets.STRATEGIES)}, got {self.sampling!r}"),
            (self.distance in DISTANCES, f"distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}"),
            (self.lam_schedule in LAMBDA_SCHEDULES,
             f"lam_schedule must be one of {', '.join(LAMBDA_SCHEDULES)}, got {self.lam_schedule!r}"),
            (self.alpha >= 0 and self.beta >= 0 and self.l2 >= 0 and self.lam >= 0,
             "alpha, beta, l2 and lam must be non-negative"),
            (self.margin >= 0 and self.push_weight >= 0, "margin and push_weight must be non-negative"),
            (int(self.k) == self.k and self.k >= 1, f"k must be a positive integer, got {self.k}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (self.lr_adv >= 0, f"lr_adv must be non-negative, got {self.lr_adv}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"bad model setting: {message}")
        self.k = int(self.k)

    def to_dict(self):
        d = asdict(self)
        d["img_hidden"], d["txt_hidden"] = list(self.img_hidden), list(self.txt_hidden)
        return d

    def lam_at(self, progress):
        """lambda at training progress p in [0, 1]. The DANN ramp (Ganin & Lempitsky
        2015) starts the adversary at 0, while the embeddings are still random, and
        approaches ``lam`` smoothly."""
        if self.lam_schedule == "constant":
            return self.lam
        return self.lam * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


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


class ACMR:
    """The model: projectors, label classifier, GRL and modality classifier.

    d_img, d_txt: input sizes; n_classes: c. Parameters are created on ``xp`` in
    ``dtype`` from ``rng`` (host draws, so both backends start identical).
    """

    def __init__(self, d_img, d_txt, n_classes, config, *, rng, xp=numpy, dtype=numpy.float32):
        self.config, self.xp, self.dtype = config, xp, numpy.dtype(dtype)
        self.d_img, self.d_txt, self.n_classes = int(d_img), int(d_txt), int(n_classes)
        c = config
        # The projectors' inputs are features, not outputs of other layers: no dL/dx.
        self.img_projector = MLP([d_img, *c.img_hidden, c.dim], rng=rng, xp=xp, dtype=dtype, input_grad=False)
        self.txt_projector = MLP([d_txt, *c.txt_hidden, c.dim], rng=rng, xp=xp, dtype=dtype, input_grad=False)
        self.label_classifier = MLP([c.dim, n_classes], rng=rng, xp=xp, dtype=dtype, last_tanh=False)
        self.img_normalize, self.txt_normalize = L2Normalize(), L2Normalize()
        self.grl = GradientReversal(c.lam)
        self.modality_classifier = MLP([c.dim, c.disc_hidden, 2], rng=rng, xp=xp, dtype=dtype, last_tanh=False)
        # Input standardisation (identity until set_input_stats is called).
        self.input_stats = {
            "img_mean": xp.zeros(d_img, dtype), "img_std": xp.ones(d_img, dtype),
            "txt_mean": xp.zeros(d_txt, dtype), "txt_std": xp.ones(d_txt, dtype),
        }

    @classmethod
    def for_data(cls, data, config, *, rng, xp=numpy, dtype=numpy.float32):
        """The model sized for a data set (anything with d_img, d_txt, n_classes and a
        train split), its inputs standardised with the training split's statistics:
        how every training run, and the "before training" figure, build it."""
        model = cls(data.d_img, data.d_txt, data.n_classes, config, rng=rng, xp=xp, dtype=dtype)
        model.set_input_stats(data.train.img, data.train.txt)
        return model

    # ---- parameter bookkeeping ------------------------------------------------
    EMBEDDING_PARTS = ("img_projector", "txt_projector", "label_classifier")  # the "generator", Eq. 9
    ADVERSARY_PARTS = ("modality_classifier",)                                # the "discriminator", Eq. 10
    L_REG_PARTS = ("img_projector", "txt_projector")                          # L_reg penalises their weights, Eq. 7
    PARTS = EMBEDDING_PARTS + ADVERSARY_PARTS

    def named(self, which, parts=PARTS):
        """{"<part>.<i>.<name>": array} for which = "params" or "grads"."""
        return {f"{p}.{k}": v for p in parts for k, v in getattr(self, p).named(which).items()}

    def set_input_stats(self, img, txt):
        """Fit the standardisation on training features: img (n, d_img), txt (n, d_txt).
        A constant feature gets std 1 (it is then just shifted to 0)."""
        xp = self.xp
        for name, x in (("img", img), ("txt", txt)):
            x = to_device(x, xp, numpy.float64)
            std = x.std(axis=0)
            self.input_stats[f"{name}_mean"][...] = x.mean(axis=0)
            self.input_stats[f"{name}_std"][...] = xp.where(std > 1e-12, std, 1.0)

    def standardize(self, img, txt):
        """Raw features (any backend, any float dtype) -> standardised arrays on xp."""
        s = self.input_stats
        img = (to_device(img, self.xp, self.dtype) - s["img_mean"]) / s["img_std"]
        txt = (to_device(txt, self.xp, self.dtype) - s["txt_mean"]) / s["txt_std"]
        return img, txt

    def embed(self, img, txt, chunk_size=4096):
        """Raw features -> common-space embeddings (s_v, s_t) on xp, in chunks."""
        img, txt = self.standardize(img, txt)
        xp = self.xp
        s_v = xp.concatenate([self.img_projector.forward(img[i:i + chunk_size])
                              for i in range(0, max(len(img), 1), chunk_size)])
        s_t = xp.concatenate([self.txt_projector.forward(txt[i:i + chunk_size])
                              for i in range(0, max(len(txt), 1), chunk_size)])
        return s_v, s_t

    # ---- the objective and its gradient, by hand ---------------------------------
    def _imi_one_direction(self, anchor, other, labels, noise):
        """L_imi,V (Eq. 4) for image anchors, or L_imi,T (Eq. 5) for text anchors.
        anchor, other (B, m) -> (loss, d_anchor (B, m), d_other (B, m))."""
        c, B = self.config, anchor.shape[0]
        pos_idx, neg_idx = triplets.sample(anchor, other, labels, noise, c.sampling)
        P = triplets.selection_matrix(pos_idx, B, anchor.dtype)
        Q = triplets.selection_matrix(neg_idx, B, anchor.dtype)
        if c.triplet == "hinge":
            loss, (d_a, d_p, d_q) = losses.triplet_hinge(anchor, P @ other, Q @ other, c.margin)
        else:
            loss, (d_a, d_p, d_q) = losses.pull_push(anchor, P @ other, Q @ other, c.margin, c.push_weight)
        # picked = P @ other  =>  d_other = P^T d_picked (sums over anchors sharing an item)
        return loss, d_a, P.T @ d_p + Q.T @ d_q

    def loss_and_grads(self, img, txt, labels, noise, lam, l_reg=True):
        """Forward both modalities, every loss, and the full backward pass.

        img (B, d_img), txt (B, d_txt): standardised features of B pairs on xp;
        labels (B,) integer ids on xp; noise (2, B, B) uniform noise for triplet
        sampling, or None to leave out L_imi (a batch with a single class has no
        negatives); lam: the GRL's lambda for this step.
        Fills every layer's grads:
          embedding player:     d/dtheta [alpha L_imi + beta L_imd + L_reg] - lam dL_adv/dtheta
          modality classifier:  dL_adv/dtheta_D
        Returns a dict of 0-d arrays on xp: L_imi, L_imd, L_reg, L_adv, adv_acc.
        l_reg=False leaves L_reg out, its value (no "L_reg" key) and its gradient, for a
        caller whose optimiser applies it as weight decay (Trainer; see l_reg_weights).
        """
        c, xp = self.config, self.xp
        B = img.shape[0]

        # 1. Project both modalities into the common space S.
        s_v = self.img_projector.forward(img)
        s_t = self.txt_projector.forward(txt)
        s = xp.concatenate([s_v, s_t])                       # (2B, m): images, then texts

        # 2. L_imd (Eq. 2): the shared label classifier on both modalities. Eq. 2 sums
        #    the two modalities' cross-entropies and averages over pairs, i.e. twice the
        #    mean over the 2B rows.
        class_logits = self.label_classifier.forward(s)
        # (check_values=False: the labels were checked once, when the data was loaded;
        #  checking them here would make every step wait for the GPU)
        l_imd, d_class_logits = losses.softmax_cross_entropy(class_logits, xp.concatenate([labels, labels]),
                                                             check_values=False)
        l_imd, d_class_logits = 2 * l_imd, 2 * d_class_logits

        # 3. L_imi (Eqs. 3-6): triplets across modalities, both directions. With
        #    distance="cosine" the squared distance l2(v, t) is taken between unit-length
        #    embeddings (= 2 - 2 cos), the geometry retrieval is evaluated in.
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

        # 5. L_reg (Eq. 7) on the projectors' weight matrices: losses.l2_penalty's
        #    l2 * sum ||W||_F^2, with each squared norm as a dot product (no W-sized
        #    temporary); its gradient 2 l2 W is added to each weight's gradient below.
        #    With l_reg=False the caller's optimiser does both, as weight decay (Trainer).
        terms = {"L_imi": l_imi, "L_imd": l_imd, "L_adv": l_adv, "adv_acc": adv_acc}
        reg_layers = []
        if l_reg:
            reg_layers = [layer for part in self.L_REG_PARTS for layer in getattr(self, part).linears()]
            terms["L_reg"] = c.l2 * sum(xp.dot(layer.params["W"].ravel(), layer.params["W"].ravel())
                                        for layer in reg_layers)

        # ---- backward: every layer by hand, from the losses down to the inputs ----
        # dL_emb/ds from the label classifier (weighted by beta), and from the modality
        # classifier through the GRL, which turns +dL_adv/ds into -lam dL_adv/ds.
        d_s = self.label_classifier.backward(c.beta * d_class_logits)
        d_s += self.grl.backward(self.modality_classifier.backward(d_mod_logits))
        d_s += c.alpha * d_s_imi
        self.img_projector.backward(d_s[:B])
        self.txt_projector.backward(d_s[B:])
        for layer in reg_layers:
            layer.grads["W"] += (2.0 * c.l2) * layer.params["W"]  # L_reg's share of the gradient
        return terms

    def l_reg_weights(self):
        """The names, as in named("params"), of the weights L_reg (Eq. 7) penalises: the
        weight matrices of the L_REG_PARTS' Linear layers."""
        return [f"{part}.{i}.W" for part in self.L_REG_PARTS
                for i, layer in enumerate(getattr(self, part).layers) if isinstance(layer, Linear)]


class Trainer:
    """The two players' optimisers and one step of the paper's Algorithm 1.

    Both players use Adam. The embedding player (projectors and label classifier)
    steps every step; the modality classifier steps every k-th step (Algorithm 1:
    k projector updates per discriminator update). The label classifier is in the
    embedding player's optimiser: in the authors' demo it was in none.

    L_reg (Eq. 7) is the embedding player's weight decay: l2 ||W||^2 is Adam's penalty
    (c/2) ||W||^2 with c = 2 l2, on the weights ACMR.l_reg_weights names. Adam updates
    with g + 2 l2 W, computed in the pass it makes over W anyway, and returns L_reg's
    value, so the step asks loss_and_grads for everything else (l_reg=False; the layers'
    grads then lack the 2 l2 W). The parameters after each step are the same, bit for
    bit, as with loss_and_grads's own L_reg (tests/test_model.py; the logged L_reg can
    differ in its last digits, summed in another order); only main-memory traffic is
    saved (docs/PERFORMANCE.md).
    """

    def __init__(self, model):
        self.model, c = model, model.config
        decay = {name: 2.0 * c.l2 for name in model.l_reg_weights()} if c.l2 else None
        self.opt_emb = Adam(model.named("params", model.EMBEDDING_PARTS), lr=c.lr, weight_decay=decay)
        self.opt_adv = Adam(model.named("params", model.ADVERSARY_PARTS), lr=c.lr_adv or c.lr)
        self.step_count = 0

    def train_step(self, img, txt, labels, noise, progress):
        """One step on a mini-batch (see ACMR.loss_and_grads for the arguments);
        progress in [0, 1] drives the lambda schedule. Returns the loss dict and lam."""
        m = self.model
        lam = m.config.lam_at(progress)
        terms = m.loss_and_grads(img, txt, labels, noise, lam, l_reg=False)
        terms["L_reg"] = self.opt_emb.step(m.named("grads", m.EMBEDDING_PARTS))  # its update includes L_reg
        if self.step_count % m.config.k == 0:
            self.opt_adv.step(m.named("grads", m.ADVERSARY_PARTS))
        self.step_count += 1
        return terms, lam

    def state_dict(self):
        """Host copies: parameters, input statistics, both optimisers, the step count."""
        m = self.model
        out = {f"param/{k}": to_host(v) for k, v in m.named("params").items()}
        out.update({f"input/{k}": to_host(v) for k, v in m.input_stats.items()})
        out.update({f"opt_emb/{k}": v for k, v in self.opt_emb.state_dict().items()})
        out.update({f"opt_adv/{k}": v for k, v in self.opt_adv.state_dict().items()})
        out["step_count"] = self.step_count
        return out

    def load_state_dict(self, d):
        m = self.model
        load_model_arrays(m, d)
        for prefix, opt in (("opt_emb/", self.opt_emb), ("opt_adv/", self.opt_adv)):
            try:
                opt.load_state_dict({k[len(prefix):]: v for k, v in d.items() if k.startswith(prefix)})
            except ValueError as exc:
                raise InputError(f"checkpoint does not fit this model: {prefix[:-1]}: {exc}") from None
        self.step_count = int(d["step_count"])


def load_model_arrays(model, d):
    """Copy saved parameters and input statistics (host arrays keyed "param/..." and
    "input/...") into a model, refusing any name or shape that differs."""
    targets = {f"param/{k}": v for k, v in model.named("params").items()}
    targets.update({f"input/{k}": v for k, v in model.input_stats.items()})
    saved = {k for k in d if k.startswith(("param/", "input/"))}
    if saved != set(targets):
        raise InputError(f"checkpoint does not fit this model: missing {sorted(set(targets) - saved)[:5]}, "
                         f"unexpected {sorted(saved - set(targets))[:5]}")
    for k, a in targets.items():
        if tuple(d[k].shape) != tuple(a.shape):
            raise InputError(f"checkpoint does not fit this model: {k} has shape {tuple(d[k].shape)}, "
                             f"the model expects {tuple(a.shape)}")
        a[...] = to_device(d[k], model.xp, a.dtype)
