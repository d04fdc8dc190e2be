"""Differentiable expected BLEU on teacher-forced batches: the dev reward the teacher maximises.

The teacher differentiates this reward with respect to the student's weights and
then back through the student's training steps, so it has to be smooth and finite
everywhere; decoding (beam search, argmax) is not.  Under teacher forcing the
student gives, at every reference position t, a distribution over the vocabulary.
The hypothesis is modelled as drawn from these distributions independently,
position by position, and the BLEU statistics are replaced by their expectations:

* matches_n: expected number of reference n-grams matched *at their own position*,
  sum_t prod_{k<n} q_{t+k}, where q_t = p(y_t | y_<t, x).  Positional matching
  is what keeps the expectation closed-form; it never exceeds BLEU's clipped
  matches of the same hypothesis.
* count_n: hypothesis n-grams, L - n + 1 for a sentence of L real tokens (>= 0).
* hypothesis length c: expected position of the first EOS (see
  `expected_hypothesis_length`), against the reference length r = L.

Tokens are the target's ids, final EOS included (it is a token the student has
to predict).  Precisions use add-k smoothing for n >= 2, sacrebleu's
``smooth_method='add-k'`` (Chen & Cherry 2014, method 2):
p_n = (matches_n + k) / (count_n + k), and p_1 = matches_1 / count_1 unsmoothed;
with k = 1 this equals sacrebleu's BLEU of a hypothesis whose matches are all
positional.  A precision is floored at the smallest positive float before its
log, so a zero unigram precision gives BLEU ~ 0 with a zero (not NaN) gradient.

The hypothesis is cut at the reference length (teacher forcing has no
distributions beyond it), so c <= r and BLEU's brevity penalty
exp(min(0, 1 - r/c)) is exactly exp(1 - r/c): no min, hence no kink, is needed.
Empty sentences (all padding) score 0, as in sacrebleu.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def reference_token_probs(lprobs: Tensor, target: Tensor, pad_idx: int) -> tuple[Tensor, Tensor]:
    """q (B x T) = exp(lprobs gathered at target), and the mask of real (non-pad) tokens.

    q is exactly 0 at padding, and the log-prob there is replaced before exp so that
    whatever the model put at padded positions (even NaN) cannot reach values or gradients.
    """
    mask = target.ne(pad_idx)
    gathered = lprobs.gather(-1, target.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
    return gathered.masked_fill(~mask, float("-inf")).exp(), mask


def soft_ngram_stats(q: Tensor, mask: Tensor, max_order: int = 4) -> tuple[Tensor, Tensor]:
    """Per-sentence soft matches (B x max_order) and counts (B x max_order).

    An n-gram start t is valid when all n tokens are real; the window products are
    built incrementally, p_n[t] = p_{n-1}[t] * q[t + n - 1].
    """
    window_prob, window_valid = q, mask
    matches, counts = [], []
    for order in range(1, max_order + 1):
        if order > 1:
            window_prob = window_prob[:, :-1] * q[:, order - 1:]
            window_valid = window_valid[:, :-1] & mask[:, order - 1:]
        matches.append(window_prob.masked_fill(~window_valid, 0.0).sum(1))
        counts.append(window_valid.sum(1).to(q.dtype))
    return torch.stack(matches, 1), torch.stack(counts, 1)


def expected_hypothesis_length(lprobs: Tensor, target: Tensor, pad_idx: int, eos_idx: int) -> Tensor:
    """Expected hypothesis length (B,) when decoding stops at the first EOS.

    Position t (1-based) is drawn independently from the student's distribution
    there; the hypothesis length is the position of its first EOS (counted), or L
    if none comes earlier, L being the reference length.  So
    c = E[length] = sum_{t=1}^{L} P(length >= t) = sum_{t=1}^{L} prod_{k<t} (1 - e_k)
    with e_k = p(EOS) at position k: only the positions before the reference's
    final EOS enter, and 1 <= c <= L for a non-empty sentence.
    """
    mask = target.ne(pad_idx)
    eos_lprobs = lprobs[..., eos_idx].masked_fill(~mask, float("-inf"))  # padding kept out, as in q
    continue_prob = -torch.expm1(eos_lprobs)
    reached_before = torch.cat([torch.ones_like(continue_prob[:, :1]), continue_prob[:, :-1]], dim=1)
    return torch.cumprod(reached_before, dim=1).masked_fill(~mask, 0.0).sum(1)


def _bleu_from_stats(matches: Tensor, counts: Tensor, hyp_len: Tensor, ref_len: Tensor, smooth: float) -> Tensor:
    """BLEU (one per row) of summed statistics; rows with ref_len = 0 score 0."""
    max_order = matches.size(-1)
    additive = torch.full((max_order,), smooth, dtype=matches.dtype, device=matches.device)
    additive[0] = 0.0
    # A zero denominator (empty row at n = 1, or smooth = 0 and an order longer than
    # the sentence) has zero matches too: precision 0, not 0/0.
    denominators = counts + additive
    precisions = (matches + additive) / denominators.masked_fill(denominators == 0, 1.0)
    log_precision = precisions.clamp(min=torch.finfo(matches.dtype).tiny).log().mean(-1)
    # c >= 1 whenever ref_len >= 1 (the first position is always reached).
    log_brevity = 1.0 - ref_len / hyp_len.clamp(min=1.0)
    bleu = (log_brevity + log_precision).exp()
    return torch.where(ref_len > 0, bleu, torch.zeros_like(bleu))


def expected_bleu(
    lprobs: Tensor,
    target: Tensor,
    pad_idx: int,
    eos_idx: int,
    max_order: int = 4,
    smooth: float = 1.0,
    per_sentence: bool = False,
) -> Tensor:
    """Corpus-level expected BLEU in [0, 1] (scalar), or one value per sentence (B,).

    lprobs: B x T x V log-probabilities; target: B x T, right-padded with pad_idx.
    Corpus level sums matches, counts and lengths over the batch before combining,
    as corpus BLEU does; per_sentence combines each row's own statistics.
    """
    q, mask = reference_token_probs(lprobs, target, pad_idx)
    matches, counts = soft_ngram_stats(q, mask, max_order)
    hyp_len = expected_hypothesis_length(lprobs, target, pad_idx, eos_idx)
    ref_len = mask.sum(1).to(q.dtype)
    if per_sentence:
        return _bleu_from_stats(matches, counts, hyp_len, ref_len, smooth)
    return _bleu_from_stats(matches.sum(0), counts.sum(0), hyp_len.sum(), ref_len.sum(), smooth)


def expected_bleu_dev_objective(pad_idx: int, eos_idx: int, max_order: int = 4) -> Callable[[Tensor, Tensor], Tensor]:
    """A dev objective (logits B x T x V, target B x T) -> 1-element tensor 1 - expected BLEU.

    Dev objectives are minimised and fed logits, hence the complement and the log_softmax.
    """

    def one_minus_expected_bleu(logits: Tensor, target: Tensor) -> Tensor:
        lprobs = F.log_softmax(logits, dim=-1)
        return (1.0 - expected_bleu(lprobs, target, pad_idx, eos_idx, max_order)).reshape(1)

    return one_minus_expected_bleu
