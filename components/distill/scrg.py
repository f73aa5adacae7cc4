"""SCRG, sequence correction and re-generation: the sequence level of MGSR (Liu et al. 2024, sec. 3.1).

For each prompt x and a sequence y (a student sample, or the teacher's response for off-policy rows):
1. one teacher and one student forward pass over (x, y) give P_i and Q_i at every response position;
2. the teacher's token y^t_i is sampled from P_i (or its argmax);
3. d_i = KL(P_i || Q_i) (or KL(Q_i || P_i));
4. j = argmax d_i over response positions where y_i != y^t_i; none -> the sequence is kept;
5. y_j := y^t_j and the student regenerates the suffix after j, continuing from the KV cache of its
   scoring pass (the prefix is never recomputed);
6. repeat for `rounds`. A later round only looks after the previous correction, so a correction is
   never undone and each round revises text the previous one produced (our choice; the paper is silent).

Example::

    result = correct_and_regenerate(teacher, student, tokenizer, prompt_ids, sampled_ids, ScrgConfig(rounds=1))
    result.revised[0], result.positions[0], result.divergences[0]

Sequences carry their EOS token when they ended with one: the EOS is a scored position like any other
(the teacher may disagree that the answer ends there), and a replacement token that is EOS ends the
sequence without regeneration. Regeneration keeps the total response within `max_new_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from components.generation.batched import _eos_ids, decode_batches, resolve_engine, sampling_of
from components.generation.fused import FusedDecoder
from components.generation.padding import pad_rows
from components.generation.static import StaticDecoder, static_length
from components.rng import seeded
from semflow.config import ScrgConfig


def _eos(model, tokenizer) -> set[int]:
    ids = _eos_ids(model, tokenizer)
    if not ids:
        raise ValueError("the model has no EOS token: set generation_config.eos_token_id")
    return ids


@dataclass
class ScrgResult:
    revised: list[list[int]]
    positions: list[list[int]] = field(default_factory=list)  # j per applied correction
    divergences: list[list[float]] = field(default_factory=list)  # d_j per applied correction
    regenerated: list[int] = field(default_factory=list)  # tokens the student wrote after corrections
    seconds: dict[str, float] = field(default_factory=dict)


def token_divergence(teacher_logp: torch.Tensor, student_logp: torch.Tensor, direction: str) -> torch.Tensor:
    """d_i per position: KL(P_i || Q_i) (forward) or KL(Q_i || P_i) (reverse); inputs [..., V] log-probs."""
    if direction == "forward":
        return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)
    if direction == "reverse":
        return (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)
    raise ValueError(f"direction must be forward or reverse, got {direction!r}")


def select_correction(
    divergence: torch.Tensor, sequence: torch.Tensor, teacher_tokens: torch.Tensor, candidates: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """j = argmax_i d_i over candidate positions where sequence_i != teacher_i, per row.

    All inputs [B, L]; candidates masks padding, prompt and already-settled positions.
    Returns (j [B], d_j [B]) with j = -1 (and d_j = nan) where no position qualifies.
    """
    eligible = candidates & (sequence != teacher_tokens)
    scores = divergence.masked_fill(~eligible, float("-inf"))
    d_j, j = scores.max(-1)
    none = ~eligible.any(-1)
    return j.masked_fill(none, -1), d_j.masked_fill(none, float("nan"))


def _positions(mask: torch.Tensor) -> torch.Tensor:
    # Left padding must not shift positions: the first real token is position 0 (as generate does).
    return (mask.cumsum(-1) - 1).clamp_min(0)


def _realign_cache(cache, keep_rows: list[int], starts: list[int], lengths: list[int], width: int) -> None:
    """Cut each kept row's prefix [start, start + length) out of the cache, right-aligned to `width`.

    Keys were rotated with their true positions during scoring, so moving them between columns keeps
    them valid; the new attention mask hides the left padding."""
    device = cache.layers[0].keys.device
    src = torch.zeros((len(keep_rows), width), dtype=torch.long)
    for r, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        src[r, width - length :] = torch.arange(start, start + length)
    rows = torch.tensor(keep_rows, device=device)
    for layer in cache.layers:
        if type(layer).__name__ != "DynamicLayer":
            raise NotImplementedError(f"SCRG cache reuse supports full-attention caches, not {type(layer).__name__}")
        idx = src.to(device)[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[-1])
        layer.keys = layer.keys[rows].gather(2, idx)
        layer.values = layer.values[rows].gather(2, idx)


@torch.inference_mode()
def _correct_batch(teacher, student, prompts, seqs, settled, cfg: ScrgConfig, eos: list[int], pad_id: int,
                   generator: torch.Generator, seed: int):
    """One correction round over a batch. Mutates seqs/settled; returns per-row (j, d_j, regenerated)."""
    device = student.device
    full = [p + s for p, s in zip(prompts, seqs, strict=True)]
    ids, mask = pad_rows(full, pad_id, device=device)
    width, resp = ids.shape[1], max(len(s) for s in seqs)
    positions = _positions(mask)
    # Only the response positions need logits: the hidden states at columns [width-resp-1, width-1)
    # predict the (right-aligned) response tokens.
    window = slice(width - resp - 1, width - 1)
    t_hidden = teacher.base_model(input_ids=ids.to(teacher.device), attention_mask=mask.to(teacher.device),
                                  position_ids=positions.to(teacher.device)).last_hidden_state
    t_logp = F.log_softmax(teacher.get_output_embeddings()(t_hidden[:, window]).float(), -1).to(device)
    del t_hidden
    s_out = student.base_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    s_logp = F.log_softmax(student.get_output_embeddings()(s_out.last_hidden_state[:, window]).float(), -1)
    cache = s_out.cache

    # Right-aligned response layout [B, resp]: row b's token i sits at column resp - len(b) + i.
    seq = ids[:, width - resp :]
    offset = torch.tensor([resp - len(s) for s in seqs], device=device)
    col = torch.arange(resp, device=device)[None, :]
    index = col - offset[:, None]  # response index of each column (negative: padding)
    settled_t = torch.tensor(settled, device=device)[:, None]
    candidates = index > settled_t
    if cfg.teacher_token == "argmax":
        teacher_tokens = t_logp.argmax(-1)
    else:
        # Drawn where the probabilities are (the generator lives on the student's device): copying
        # [B * L, V] probabilities to the host cost 20 s of a 24 s SCRG batch on the H200.
        teacher_tokens = torch.multinomial(t_logp.exp().flatten(0, 1), 1, generator=generator)
        teacher_tokens = teacher_tokens.view(t_logp.shape[:2])
    d = token_divergence(t_logp, s_logp, cfg.direction)
    j_col, d_j = select_correction(d, seq, teacher_tokens, candidates)

    results = [(-1, float("nan"), 0)] * len(seqs)
    regen_rows, starts, lengths = [], [], []
    for b, c in enumerate(j_col.tolist()):
        if c < 0:
            continue
        j = c - int(offset[b])
        new_token = int(teacher_tokens[b, c])
        seqs[b] = seqs[b][:j] + [new_token]
        settled[b] = j
        results[b] = (j, float(d_j[b]), 0)
        if new_token not in eos and len(seqs[b]) < cfg.max_new_tokens:
            regen_rows.append(b)
            # The prefix before the replaced token: prompt + y[:j], ending at full-sequence column
            # width - len(y) + j.
            end = width - len(full[b]) + len(prompts[b]) + j
            starts.append(width - len(full[b]))
            lengths.append(end - starts[-1])
    if not regen_rows:
        return results
    prefix_width = max(lengths)
    _realign_cache(cache, regen_rows, starts, lengths, prefix_width)
    new_ids, new_mask = pad_rows([prompts[b] + seqs[b] for b in regen_rows], pad_id, device=device)
    budget = max(cfg.max_new_tokens - len(seqs[b]) for b in regen_rows)
    with seeded(seed):  # the regenerated tails draw from `seed` alone (components.rng)
        engine = resolve_engine(student, cfg.engine)
        if engine in ("static", "fused"):
            # The prefix moves into a static cache; the replaced token is the first one fed.
            make = FusedDecoder if engine == "fused" else StaticDecoder
            decoder = make(student, len(regen_rows), static_length(prefix_width, budget), sampling_of(cfg), eos, pad_id)
            decoder.load_prefix(cache, new_mask[:, :-1].bool())
            tails = decoder.decode(new_ids[:, -1], budget)
        else:
            out = student.generate(
                input_ids=new_ids, attention_mask=new_mask, cache=cache, max_new_tokens=budget,
                do_sample=cfg.do_sample, **(dict(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k or None)
                                               if cfg.do_sample else {}),
                pad_token_id=pad_id, eos_token_id=eos,
            )
            tails = out[:, new_ids.shape[1] :]
    for r, b in enumerate(regen_rows):
        tail = tails[r].tolist()[: cfg.max_new_tokens - len(seqs[b])]
        stop = next((k for k, t in enumerate(tail) if t in eos), None)
        tail = tail if stop is None else tail[: stop + 1]  # keep the EOS itself
        seqs[b] = seqs[b] + tail
        results[b] = (results[b][0], results[b][1], len(tail))
    return results


def correct_and_regenerate(
    teacher, student, tokenizer, prompts: list[list[int]], sequences: list[list[int]], cfg: ScrgConfig,
    progress: bool = True,
) -> ScrgResult:
    """Correct every sequence (response ids, EOS included when it ended) given its prompt ids."""
    if len(prompts) != len(sequences):
        raise ValueError(f"{len(prompts)} prompts but {len(sequences)} sequences")
    eos = sorted(_eos(student, tokenizer))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    n = len(prompts)
    revised = [list(s) for s in sequences]
    positions: list[list[int]] = [[] for _ in range(n)]
    divergences: list[list[float]] = [[] for _ in range(n)]
    regenerated = [0] * n
    order = sorted(range(n), key=lambda i: -(len(prompts[i]) + len(sequences[i])))
    batches = [order[i : i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
    bar = tqdm(total=n * cfg.rounds, desc="scrg", unit="seq", disable=not progress)
    for b_idx, batch in enumerate(batches):
        settled = [-1] * len(batch)
        seqs = [revised[i] for i in batch]
        for rnd in range(cfg.rounds):
            live = [k for k, s in enumerate(seqs) if s]
            if live:
                gen = torch.Generator(student.device).manual_seed(cfg.seed * 1_000_003 + b_idx * 101 + rnd)
                sub_seqs, sub_settled = [seqs[k] for k in live], [settled[k] for k in live]
                out = _correct_batch(teacher, student, [prompts[batch[k]] for k in live], sub_seqs,
                                     sub_settled, cfg, eos, pad_id, gen, cfg.seed + b_idx * 101 + rnd)
                for k, s, st, (j, d_j, regen) in zip(live, sub_seqs, sub_settled, out, strict=True):
                    seqs[k], settled[k] = s, st
                    if j >= 0:
                        positions[batch[k]].append(j)
                        divergences[batch[k]].append(d_j)
                        regenerated[batch[k]] += regen
            bar.update(len(batch))
        for k, i in enumerate(batch):
            revised[i] = seqs[k]
    bar.close()
    return ScrgResult(revised=revised, positions=positions, divergences=divergences, regenerated=regenerated)


@torch.inference_mode()
def sample_responses(
    model, tokenizer, prompts: list[list[int]], cfg: ScrgConfig, seed: int | None = None, progress: bool = False
) -> list[list[int]]:
    """Sample one response per prompt (token ids, EOS kept when the response ended with it).

    Batches are length-sorted and left-padded; batch k draws from `seed + k`, so results do not depend
    on what ran before in the process."""
    eos = sorted(_eos(model, tokenizer))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    return decode_batches(
        model, prompts, max_new_tokens=cfg.max_new_tokens, sampling=sampling_of(cfg), eos=eos, pad_id=pad_id,
        batch_size=cfg.batch_size, seed=cfg.seed if seed is None else seed, engine=cfg.engine, progress=progress,
        desc="sample",
    )


def revise_mixed(
    teacher, student, tokenizer, prompts: list[list[int]], teacher_sequences: list[list[int]], cfg: ScrgConfig,
    progress: bool = True,
) -> tuple[list[bool], list[list[int]], ScrgResult]:
    """SCRG over a DistiLLM/GKD-style mix: a seeded choice of round(on_policy * n) rows start from a
    student sample, the rest from the teacher's response. Teacher rows pass through unrevised unless
    `cfg.correct_off_policy` (a correction would hand the rest of a teacher response to the student).

    Returns (on-policy mask, the sequences before correction, the ScrgResult over all rows)."""
    n = len(prompts)
    on_policy = np.zeros(n, dtype=bool)
    on_policy[np.random.default_rng(cfg.seed).permutation(n)[: round(cfg.on_policy * n)]] = True
    sequences = [list(x) for x in teacher_sequences]
    rows = np.flatnonzero(on_policy).tolist()
    for i, ids in zip(rows, sample_responses(student, tokenizer, [prompts[i] for i in rows], cfg, progress=progress),
                      strict=True):
        sequences[i] = ids
    todo = list(range(n)) if cfg.correct_off_policy else rows
    part = correct_and_regenerate(teacher, student, tokenizer, [prompts[i] for i in todo], [sequences[i] for i in todo], cfg,
                        progress=progress)
    result = ScrgResult(revised=[list(x) for x in sequences], positions=[[] for _ in range(n)],
                        divergences=[[] for _ in range(n)], regenerated=[0] * n)
    for k, i in enumerate(todo):
        result.revised[i], result.positions[i] = part.revised[k], part.positions[k]
        result.divergences[i], result.regenerated[i] = part.divergences[k], part.regenerated[k]
    return on_policy.tolist(), sequences, result
