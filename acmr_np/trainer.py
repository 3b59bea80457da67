"""One step of the minimax game: the paper's Algorithm 1.

Two players share one forward and backward pass (ACMR.loss_and_grads):

- the embedding player (both projectors and the label classifier) minimises
  L_emb - lambda L_adv (Eq. 9); its gradients arrive with the reversed L_adv term already
  in them, through the gradient reversal layer;
- the modality classifier minimises L_adv (Eq. 10).

Each has its own Adam. The embedding player steps every step; the modality classifier
every k-th step (Algorithm 1: k projector updates per discriminator update). The label
classifier is in the embedding player's optimiser: in the authors' demo it was in none.
lambda follows its schedule over the progress p of the whole run (ACMRConfig.lam_at).
"""
from .model import ACMR
from .optim import Adam


class Trainer:
    """The two players' optimisers and ``train_step``.

    model: an ACMR. The textbook optimisers of optim.py; acmr_np.fast.FastTrainer is the
    same with faster ones (what the training loop uses).
    """

    def __init__(self, model):
        if not isinstance(model, ACMR):
            raise TypeError(f"Trainer: expected an ACMR model, got {type(model).__name__}")
        self.model = model
        self.step_count = 0
        self.make_optimizers()

    def make_optimizers(self):
        m, c = self.model, self.model.config
        self.opt_emb = Adam(m.named("params", m.EMBEDDING_PARTS), lr=c.lr)
        self.opt_adv = Adam(m.named("params", m.ADVERSARY_PARTS), lr=c.lr_adv or c.lr)

    def train_step(self, img, txt, labels, noise, progress):
        """One step of Algorithm 1 on a mini-batch.

        img (B, d_img), txt (B, d_txt): raw features of B pairs; labels (B,) or (B, c); noise
        (2, B, B) uniform noise for the triplets (see ACMR.loss_and_grads); progress in
        [0, 1]: how far training has come, which sets lambda.
        Returns (terms, lam): the loss dict of loss_and_grads and this step's lambda.
        """
        # BEGIN SOLUTION
        m = self.model
        lam = m.config.lam_at(progress)
        terms = m.loss_and_grads(img, txt, labels, noise, lam)
        self.opt_emb.step(m.named("grads", m.EMBEDDING_PARTS))
        if self.step_count % m.config.k == 0:
            self.opt_adv.step(m.named("grads", m.ADVERSARY_PARTS))
        self.step_count += 1
        return terms, lam
        # END SOLUTION

    def state_dict(self):
        """Host copies of everything a resumed run needs: the model (parameters and
        input statistics), both optimisers, and the step count."""
        out = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        out.update({f"opt_emb/{k}": v for k, v in self.opt_emb.state_dict().items()})
        out.update({f"opt_adv/{k}": v for k, v in self.opt_adv.state_dict().items()})
        out["step_count"] = self.step_count
        return out

    def load_state_dict(self, d):
        """Load what ``state_dict`` returned. Every part is checked before any is loaded:
        a state that does not fit is a ValueError naming the part, and changes nothing."""
        parts = {p: {k[len(p) + 1:]: v for k, v in d.items() if k.startswith(p + "/")}
                 for p in ("model", "opt_emb", "opt_adv")}
        targets = (("model", self.model), ("opt_emb", self.opt_emb), ("opt_adv", self.opt_adv))
        for name, target in targets:
            try:
                target.check_state_dict(parts[name])
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        for name, target in targets:
            target.load_state_dict(parts[name])
        self.step_count = int(d["step_count"])
