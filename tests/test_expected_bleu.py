"""Expected BLEU checked against brute-force enumeration, sacrebleu and autograd."""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
import sacrebleu
import torch
import torch.nn.functional as F
from torch import Tensor

from fairseq_l2t.expected_bleu import (
    expected_bleu,
    expected_bleu_dev_objective,
    expected_hypothesis_length,
    reference_token_probs,
    soft_ngram_stats,
)

PAD, EOS = 1, 2


def make_target(rows: list[list[int]]) -> Tensor:
    """Right-pad token rows, each already ending with EOS."""
    width = max(len(row) for row in rows)
    return torch.tensor([row + [PAD] * (width - len(row)) for row in rows])


def random_target(lengths: list[int], vocab: int, generator: torch.Generator) -> Tensor:
    """Rows of real tokens (no PAD, no EOS) closed by EOS."""
    real = [t for t in range(vocab) if t not in (PAD, EOS)]
    rows = [[real[i] for i in torch.randint(len(real), (n - 1,), generator=generator)] + [EOS] for n in lengths]
    return make_target(rows)


def hypotheses_with_probs(probs: Tensor) -> Iterator[tuple[tuple[int, ...], float]]:
    """Every sequence over the vocabulary with its probability under independent positions."""
    length, vocab = probs.shape
    for hypothesis in itertools.product(range(vocab), repeat=length):
        yield hypothesis, torch.prod(probs[torch.arange(length), torch.tensor(hypothesis)]).item()


def test_soft_matches_equal_brute_force_expected_positional_matches():
    vocab, max_order = 3, 4
    target = make_target([[0, 2, 0, 0, EOS], [2, 0, EOS]])  # mid-row EOS is just a token here
    lprobs = torch.randn(2, 5, vocab, dtype=torch.float64).log_softmax(-1)
    q, mask = reference_token_probs(lprobs, target, PAD)
    matches, counts = soft_ngram_stats(q, mask, max_order)
    for row in range(2):
        length = int(mask[row].sum())
        reference = target[row, :length].tolist()
        expected = [0.0] * max_order
        for hypothesis, prob in hypotheses_with_probs(lprobs[row, :length].exp()):
            for order in range(1, max_order + 1):
                hits = sum(hypothesis[t:t + order] == tuple(reference[t:t + order]) for t in range(length - order + 1))
                expected[order - 1] += prob * hits
        assert matches[row].tolist() == pytest.approx(expected, rel=1e-12, abs=1e-14)
        assert counts[row].tolist() == [max(0, length - order + 1) for order in range(1, max_order + 1)]


def test_expected_length_equals_brute_force_first_eos_stopping():
    """Length = 1-based position of the first EOS, or L if the hypothesis has none."""
    vocab = 3
    target = make_target([[0, 0, 0, 0, EOS], [0, 0, EOS], [EOS]])
    logits = torch.randn(3, 5, vocab, dtype=torch.float64)
    logits[..., EOS] += 1.0  # make early stops likely enough to matter
    lprobs = logits.log_softmax(-1)
    lengths = expected_hypothesis_length(lprobs, target, PAD, EOS)
    for row in range(3):
        length = int(target[row].ne(PAD).sum())
        expected = 0.0
        for hypothesis, prob in hypotheses_with_probs(lprobs[row, :length].exp()):
            expected += prob * (hypothesis.index(EOS) + 1 if EOS in hypothesis else length)
        assert lengths[row].item() == pytest.approx(expected, rel=1e-12)


def one_hot_lprobs(tokens: Tensor, vocab: int) -> Tensor:
    """Log-probs putting all mass on `tokens` (-1e9 elsewhere), float64."""
    logits = torch.full((*tokens.shape, vocab), -1e9, dtype=torch.float64)
    logits.scatter_(-1, tokens.unsqueeze(-1), 0.0)
    return logits.log_softmax(-1)


def words(row: Tensor) -> str:
    return " ".join(f"w{token}" for token in row.tolist() if token != PAD)


def sacrebleu_score(hypotheses: Tensor, references: Tensor) -> float:
    """sacrebleu corpus BLEU / 100 on token ids as words, EOS included, add-1 smoothing."""
    bleu = sacrebleu.BLEU(tokenize="none", smooth_method="add-k", smooth_value=1.0)
    return bleu.corpus_score([words(h) for h in hypotheses], [[words(r) for r in references]]).score / 100


def test_one_hot_on_reference_gives_bleu_one_like_sacrebleu():
    generator = torch.Generator().manual_seed(1)
    target = random_target([7, 4, 1], vocab=20, generator=generator)
    lprobs = one_hot_lprobs(target, vocab=20)
    assert expected_bleu(lprobs, target, PAD, EOS).item() == pytest.approx(1.0, abs=1e-12)
    assert expected_bleu(lprobs, target, PAD, EOS).item() == pytest.approx(sacrebleu_score(target, target), abs=1e-12)
    for smooth in (1.0, 0.5):  # the length-1 sentence has only smoothed (k / k) precisions above n = 1
        per_sentence = expected_bleu(lprobs, target, PAD, EOS, smooth=smooth, per_sentence=True)
        assert per_sentence.tolist() == pytest.approx([1.0] * 3, abs=1e-12)


def test_one_hot_partly_wrong_matches_sacrebleu_when_matches_are_positional():
    """Distinct reference tokens and wrong tokens absent from the references make
    sacrebleu's clipped matches exactly the positional ones."""
    references = make_target([[3, 4, 5, 6, 7, 8, 9, EOS], [10, 11, 12, 13, EOS]])
    hypotheses = references.clone()
    hypotheses[0, 2] = hypotheses[0, 5] = hypotheses[1, 1] = 20
    lprobs = one_hot_lprobs(hypotheses, vocab=21)
    corpus = expected_bleu(lprobs, references, PAD, EOS).item()
    assert 0.1 < corpus < 0.9
    assert corpus == pytest.approx(sacrebleu_score(hypotheses, references), rel=1e-12)
    per_sentence = expected_bleu(lprobs, references, PAD, EOS, per_sentence=True)
    for row in range(2):
        assert per_sentence[row].item() == pytest.approx(
            sacrebleu_score(hypotheses[row:row + 1], references[row:row + 1]), rel=1e-12)


@pytest.mark.parametrize(
    ("max_order", "smooth", "precisions"),
    [
        (4, 1.0, [3.5 / 4, 3.5 / 4, 2.5 / 3, 1.5 / 2]),
        (4, 0.0, [3.5 / 4, 2.5 / 3, 1.5 / 2, 0.5 / 1]),
        (2, 1.0, [3.5 / 4, 3.5 / 4]),
    ],
)
def test_hand_worked_example(max_order, smooth, precisions):
    """Reference 3 4 5 EOS; position 1 is 3 or EOS with probability 1/2, the rest sure:
    q = (1/2, 1, 1, 1), c = 1 + 3 * 1/2 = 2.5, r = 4."""
    target = make_target([[3, 4, 5, EOS]])
    probs = F.one_hot(target, 6).double()
    probs[0, 0, 3] = probs[0, 0, EOS] = 0.5
    bleu = expected_bleu(probs.log(), target, PAD, EOS, max_order=max_order, smooth=smooth)
    geometric_mean = torch.tensor(precisions, dtype=torch.float64).prod() ** (1 / max_order)
    assert bleu.item() == pytest.approx(math.exp(1 - 4 / 2.5) * geometric_mean.item(), rel=1e-12)


def test_padded_positions_do_not_matter_even_when_nan():
    target = random_target([6, 2, 4], vocab=9, generator=torch.Generator().manual_seed(6))
    lprobs = torch.randn(*target.shape, 9, dtype=torch.float64).log_softmax(-1)
    garbage = torch.where(target.eq(PAD).unsqueeze(-1), torch.nan, lprobs).requires_grad_()
    for per_sentence in (False, True):
        bleu = expected_bleu(garbage, target, PAD, EOS, per_sentence=per_sentence)
        assert torch.equal(bleu, expected_bleu(lprobs, target, PAD, EOS, per_sentence=per_sentence))
        (grad,) = torch.autograd.grad(bleu.sum(), garbage)
        assert torch.isfinite(grad).all() and torch.all(grad[target.eq(PAD)] == 0)


@pytest.mark.parametrize("per_sentence", [False, True])
def test_raising_a_reference_logit_never_lowers_expected_bleu(per_sentence):
    target = random_target([6, 3], vocab=6, generator=torch.Generator().manual_seed(2))
    logits = torch.randn(2, 6, 6, dtype=torch.float64)
    base = expected_bleu(logits.log_softmax(-1), target, PAD, EOS, per_sentence=per_sentence)
    for row, position in itertools.product(range(2), range(6)):
        if target[row, position] == PAD:
            continue
        raised = logits.clone()
        raised[row, position, target[row, position]] += 0.5
        bleu = expected_bleu(raised.log_softmax(-1), target, PAD, EOS, per_sentence=per_sentence)
        assert torch.all(bleu >= base - 1e-15)
        assert torch.any(bleu > base)


@pytest.mark.parametrize("per_sentence", [False, True])
def test_gradcheck_with_respect_to_logits(per_sentence):
    target = random_target([5, 3, 1], vocab=5, generator=torch.Generator().manual_seed(3))
    logits = torch.randn(3, 5, 5, dtype=torch.float64, requires_grad=True)
    logits.data[..., EOS] -= 1.0

    def bleu(values: Tensor) -> Tensor:
        return expected_bleu(values.log_softmax(-1), target, PAD, EOS, per_sentence=per_sentence)

    assert torch.autograd.gradcheck(bleu, (logits,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lengths", [[9, 1, 4, 6], [1, 1, 1], [1], [1, 5, 1]])
def test_random_inputs_give_finite_bleu_in_unit_interval_and_finite_gradient(dtype, lengths):
    target = random_target(lengths, vocab=30, generator=torch.Generator().manual_seed(len(lengths)))
    logits = (3 * torch.randn(*target.shape, 30, dtype=dtype)).requires_grad_()
    corpus = expected_bleu(logits.log_softmax(-1), target, PAD, EOS)
    per_sentence = expected_bleu(logits.log_softmax(-1), target, PAD, EOS, per_sentence=True)
    assert corpus.shape == () and per_sentence.shape == (len(lengths),)
    for value in (corpus, per_sentence):
        assert torch.isfinite(value).all() and (value >= 0).all() and (value <= 1).all()
        (grad,) = torch.autograd.grad(value.sum(), logits)
        assert torch.isfinite(grad).all()


def test_single_sentence_corpus_equals_its_sentence_value():
    target = random_target([6], vocab=8, generator=torch.Generator().manual_seed(4))
    lprobs = torch.randn(1, 6, 8, dtype=torch.float64).log_softmax(-1)
    corpus = expected_bleu(lprobs, target, PAD, EOS)
    assert expected_bleu(lprobs, target, PAD, EOS, per_sentence=True).item() == pytest.approx(corpus.item(), rel=1e-14)


def test_empty_sentence_scores_zero_with_finite_gradient():
    target = torch.tensor([[5, 6, EOS], [PAD, PAD, PAD]])
    logits = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    per_sentence = expected_bleu(logits.log_softmax(-1), target, PAD, EOS, per_sentence=True)
    assert per_sentence[1].item() == 0.0 and per_sentence[0].item() > 0.0
    (grad,) = torch.autograd.grad(per_sentence.sum(), logits)
    assert torch.isfinite(grad).all() and torch.all(grad[1] == 0)


def test_zero_unigram_precision_gives_zero_bleu_and_finite_gradient():
    target = make_target([[3, 4, EOS]])
    logits = torch.where(F.one_hot(torch.tensor([[5, 5, 5]]), 6).bool(), 0.0, -1e9).double().requires_grad_()
    bleu = expected_bleu(logits.log_softmax(-1), target, PAD, EOS)
    assert bleu.item() == pytest.approx(0.0, abs=1e-50)
    (grad,) = torch.autograd.grad(bleu, logits)
    assert torch.isfinite(grad).all()


def test_dev_objective_is_one_minus_expected_bleu_of_log_softmax():
    target = random_target([5, 2], vocab=7, generator=torch.Generator().manual_seed(5))
    logits = torch.randn(2, 5, 7, dtype=torch.float64)
    objective = expected_bleu_dev_objective(PAD, EOS, max_order=3)(logits, target)
    assert objective.shape == (1,)
    expected = 1 - expected_bleu(logits.log_softmax(-1), target, PAD, EOS, max_order=3)
    assert objective.item() == pytest.approx(expected.item(), rel=1e-14)
    assert objective.item() != pytest.approx(1 - expected_bleu(logits.log_softmax(-1), target, PAD, EOS).item())
