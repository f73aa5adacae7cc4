"""The training objective: one config switch over MGSR and its baselines, computed over token chunks.

`Objective` turns teacher and student logits of response tokens into the method's loss:

    mgsr      w_sft * L_SFT + w_dac * L_DAC + w_span * L_span      (Liu et al. 2024, eq. 10)
    sft       L_SFT on the dataset references
    seqkd     L_SFT on teacher responses (Kim & Rush 2016)
    kd_fkl    KL(p || q)            kd_rkl   KL(q || p)
    jsd       JSD_beta(p, q)        gkd      JSD_beta on on-policy student samples (Agarwal et al. 2024)
    skew_fkl  KL(p || a p + (1-a) q)         skew_rkl  KL(q || (1-a) p + a q)   (Ko et al. 2024)
    (the divergence baselines add kd_sft_weight * L_SFT, 0 by default)

`distill_loss` computes it from final hidden states and the two LM heads. With `chunk_size` set it
never materialises [n, vocab] logits for more than one chunk of rows: a custom autograd function
computes each chunk's logits, loss and gradients (with respect to the student's hidden rows, its head
and f_sub) inside the forward pass, keeps only those gradients, and hands them back in backward. That
is the fused-linear-loss idea of Liger-Kernel, written for losses that Liger does not provide (DAC-KL,
span correlation). Without `chunk_size` it computes full logits (the naive reference).

Example::

    objective = Objective(DistillConfig(method="mgsr"))
    loss, stats = distill_loss(s_hidden, student.lm_head.weight, t_hidden, teacher.lm_head.weight,
                               labels, pair_start, objective, chunk_size=1024)
    loss.backward()
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from components.distill.losses import (
    DIVERGENCES,
    IGNORE,
    BandPredictor,
    dac_kl,
    span_correlation,
    sft_loss,
)
from semflow.config import DistillConfig

SFT_ONLY = {"sft", "seqkd"}


class Objective(nn.Module):
    """The method's loss terms; holds f_sub (DAC-KL's band predictor) for `mgsr`, so that its
    parameters train with the student's (pass `objective.parameters()` to the optimizer)."""

    def __init__(self, cfg: DistillConfig):
        super().__init__()
        self.cfg = cfg
        self.band = None
        if cfg.method == "mgsr":
            with torch.random.fork_rng(devices=[]):  # f_sub's init depends on the config alone
                torch.manual_seed(cfg.train.seed)
                self.band = BandPredictor(cfg.top_k, cfg.band_hidden)

    @property
    def needs_teacher(self) -> bool:
        return self.cfg.method not in SFT_ONLY

    def terms(
        self,
        t_logits: torch.Tensor | None,
        s_logits: torch.Tensor,
        labels: torch.Tensor,
        pair_start: torch.Tensor,
        n_tokens: int,
        n_pairs: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss over these rows, normalised by the global counts so that chunk losses add up.

        labels [n] (IGNORE on rows that only serve as the right neighbour of a span pair),
        pair_start [n] bool. Returns (loss, stats): detached 0-dim tensors, already divided by the
        global counts, that add up over chunks.
        """
        # Rows are weighted by a 0/1 mask rather than selected: boolean indexing would copy the [n, V]
        # logits and wait for the GPU (nonzero) several times per chunk.
        cfg = self.cfg
        rows = (labels != IGNORE).float()
        stats: dict[str, torch.Tensor] = {}
        sft = sft_loss(s_logits, labels).sum() / n_tokens
        stats["loss_sft"] = sft.detach()
        if cfg.method in SFT_ONLY:
            return sft, stats
        assert t_logits is not None
        if cfg.method != "mgsr":
            div = DIVERGENCES[cfg.method]
            kwargs = {"beta": cfg.jsd_beta} if cfg.method in ("jsd", "gkd") else {}
            if cfg.method.startswith("skew"):
                kwargs = {"alpha": cfg.skew_alpha}
            kd = (div(t_logits, s_logits, tau=cfg.tau, **kwargs) * rows).sum() / n_tokens
            stats[f"loss_{cfg.method}"] = kd.detach()
            return kd + cfg.kd_sft_weight * sft, stats

        target = labels.clamp_min(0) if cfg.dac_target == "label" else t_logits.argmax(-1)
        dac, lower, upper = dac_kl(t_logits, s_logits, target, self.band, cfg.kappa, cfg.tau)
        dac = (dac * rows).sum() / n_tokens
        span = span_correlation(t_logits, s_logits, pair_start, cfg.tau).sum() / max(n_pairs, 1)
        stats.update(
            loss_dac=dac.detach(),
            loss_span=span.detach(),
            band_lower=(lower.detach() * rows).sum() / n_tokens,
            band_upper=(upper.detach() * rows).sum() / n_tokens,
        )
        return cfg.w_sft * sft + cfg.w_dac * dac + cfg.w_span * span, stats


def _floats(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """Tensor stats to floats with one device synchronisation."""
    if not stats:
        return {}
    return dict(zip(stats, torch.stack([v.float() for v in stats.values()]).tolist(), strict=True))


def _logits(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return hidden.to(weight.dtype) @ weight.T


def distill_loss(
    s_hidden: torch.Tensor,
    s_weight: torch.Tensor,
    t_hidden: torch.Tensor | None,
    t_weight: torch.Tensor | None,
    labels: torch.Tensor,
    pair_start: torch.Tensor,
    objective: Objective,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective over n response rows: s_hidden/t_hidden [n, H] final hidden states (the rows that
    predict `labels` [n]), s_weight/t_weight [V, H] the LM heads, pair_start [n] bool (row i and i+1
    are adjacent tokens of one span). Returns (loss, stats) with stats averaged per token."""
    n_tokens = max(int((labels != IGNORE).sum()), 1)
    n_pairs = int(pair_start.sum())
    if not objective.needs_teacher:
        t_hidden = t_weight = None
    if not chunk_size or chunk_size >= s_hidden.shape[0]:
        with torch.no_grad():
            t_logits = _logits(t_hidden, t_weight) if t_hidden is not None else None
        loss, stats = objective.terms(t_logits, _logits(s_hidden, s_weight), labels, pair_start, n_tokens, n_pairs)
        return loss, _floats(stats)
    stats: dict[str, torch.Tensor] = defaultdict(float)
    if not torch.is_grad_enabled():  # evaluation: the same chunks, no gradients to keep
        total = s_hidden.new_zeros((), dtype=torch.float32)
        for a in range(0, s_hidden.shape[0], chunk_size):
            loss, chunk_stats = _chunk_terms(s_hidden, s_weight, t_hidden, t_weight, labels, pair_start,
                                             objective, a, chunk_size, (n_tokens, n_pairs))
            total += loss.float()
            for k, v in chunk_stats.items():
                stats[k] += v
        return total, _floats(stats)
    params = [p for p in objective.parameters() if p.requires_grad]
    loss = _ChunkedLoss.apply(
        s_hidden, s_weight, t_hidden, t_weight, labels, pair_start, objective, chunk_size,
        (n_tokens, n_pairs), stats, *params,
    )
    return loss, _floats(stats)


def _chunk_terms(s_hidden, s_weight, t_hidden, t_weight, labels, pair_start, objective, a, chunk_size,
                 counts, offset=0):
    """The objective on rows [a, a + chunk_size) plus one extra row, the right neighbour of a span
    pair that starts on the chunk's last row. `s_hidden` holds rows from `offset` on."""
    n = labels.shape[0]
    b, e = min(a + chunk_size, n), min(a + chunk_size + 1, n)
    chunk_labels = labels[a:e].clone()
    chunk_labels[b - a :] = IGNORE
    chunk_pairs = pair_start[a:e].clone()
    chunk_pairs[b - a :] = False  # a pair starting on the extra row belongs to the next chunk
    with torch.no_grad():
        t_logits = _logits(t_hidden[a:e], t_weight) if t_hidden is not None else None
    s_logits = _logits(s_hidden[a - offset : e - offset], s_weight)
    return objective.terms(t_logits, s_logits, chunk_labels, chunk_pairs, *counts)


class _ChunkedLoss(torch.autograd.Function):
    """Forward computes per-chunk loss and gradients; backward scales the stored gradients."""

    @staticmethod
    def forward(ctx, s_hidden, s_weight, t_hidden, t_weight, labels, pair_start, objective, chunk_size,
                counts, stats, *params):
        n = s_hidden.shape[0]
        grad_hidden = torch.zeros_like(s_hidden)
        grad_weight = torch.zeros_like(s_weight) if s_weight.requires_grad else None
        grad_params = [torch.zeros_like(p) for p in params]
        total = torch.zeros((), dtype=torch.float32, device=s_hidden.device)
        for a in range(0, n, chunk_size):
            e = min(a + chunk_size + 1, n)
            with torch.enable_grad():
                h = s_hidden[a:e].detach().requires_grad_(True)
                w = s_weight.detach().requires_grad_(s_weight.requires_grad)
                loss, chunk_stats = _chunk_terms(h, w, t_hidden, t_weight, labels, pair_start, objective,
                                                 a, chunk_size, counts, offset=a)
                wrt = [h] + ([w] if grad_weight is not None else []) + list(params)
                grads = torch.autograd.grad(loss, wrt, allow_unused=True)
            grad_hidden[a:e] += grads[0]
            rest = grads[1:]
            if grad_weight is not None:
                grad_weight += rest[0]
                rest = rest[1:]
            for acc, g in zip(grad_params, rest, strict=True):
                if g is not None:
                    acc += g
            total += loss.detach().float()
            for k, v in chunk_stats.items():
                stats[k] += v
            del loss, grads  # free this chunk's logits before the next one
        ctx.save_for_backward(grad_hidden, *( [grad_weight] if grad_weight is not None else []), *grad_params)
        ctx.has_weight_grad = grad_weight is not None
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = list(ctx.saved_tensors)
        grad_hidden = saved.pop(0) * grad_out
        grad_weight = saved.pop(0) * grad_out if ctx.has_weight_grad else None
        grad_params = [g * grad_out for g in saved]
        return (grad_hidden, grad_weight, None, None, None, None, None, None, None, None, *grad_params)


def student_loss_fn(student, teacher, objective: Objective, chunk_size: int | None):
    """loss_fn(batch) for the Trainer: final hidden states of both models on the batch, gathered at
    the rows that predict a response token, then `distill_loss` over those rows."""
    s_head = student.get_output_embeddings()
    t_head = teacher.get_output_embeddings() if teacher is not None else None
    for name, head in (("student", s_head), ("teacher", t_head)):
        if head is not None and getattr(head, "bias", None) is not None:
            raise NotImplementedError(f"the {name}'s LM head has a bias; distill_loss assumes none")
    if objective.needs_teacher and teacher is None:
        raise ValueError(f"method {objective.cfg.method!r} needs a teacher")

    def loss_fn(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        rows = batch["labels"][:, 1:] != IGNORE  # hidden state at t predicts token t + 1
        s_rows = student.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1][rows]
        t_rows = None
        if objective.needs_teacher:
            with torch.no_grad():
                t_rows = teacher.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1][rows]
        # A pair must end on the next response token of the same sequence: rows are gathered in
        # order, so the next gathered row is that token exactly when position t + 1 is a label too.
        pairs = batch["pair_start"][:, 1:] & torch.cat([rows[:, 1:], torch.zeros_like(rows[:, :1])], dim=1)
        return distill_loss(
            s_rows, s_head.weight, t_rows, t_head.weight if t_head is not None else None,
            batch["labels"][:, 1:][rows], pairs[rows], objective, chunk_size,
        )

    return loss_fn
