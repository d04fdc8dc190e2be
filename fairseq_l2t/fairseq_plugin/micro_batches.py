"""One lookahead batch from the micro-batches of a fairseq update, or a part of it.

With --update-freq N an update is N micro-batches, each padded on its own.
The teacher's lookahead step must see the whole update (so that one process
with --update-freq 2 and two data-parallel processes with one micro-batch
each take the same lookahead step), so the micro-batches are re-padded to a
common length and stacked; padding is masked everywhere, so the stacked
batch gives every real token the same loss as its own micro-batch did.
--lookahead-tokens then keeps a random part of its sentences.
"""

import torch
from torch import Tensor


def _pad_to(tokens: Tensor, length: int, pad: int, left: bool) -> Tensor:
    missing = length - tokens.size(1)
    if missing == 0:
        return tokens
    filler = tokens.new_full((tokens.size(0), missing), pad)
    return torch.cat([filler, tokens] if left else [tokens, filler], dim=1)


def _stack_tokens(parts: list[Tensor], pad: int, left: bool) -> Tensor:
    length = max(part.size(1) for part in parts)
    return torch.cat([_pad_to(part, length, pad, left) for part in parts], dim=0)


def _check_fields(net_input: dict) -> None:
    unknown = set(net_input) - {"src_tokens", "src_lengths", "prev_output_tokens"}
    if unknown:
        raise ValueError(f"cannot restack translation batches with net_input fields {sorted(unknown)}")


def stack_micro_batches(samples: list[dict], pad: int, left_pad_source: bool, left_pad_target: bool) -> dict:
    """A translation sample holding the sentences of all `samples`, in order."""
    if len(samples) == 1:
        return samples[0]
    inputs = [sample["net_input"] for sample in samples]
    _check_fields(inputs[0])
    return {
        "id": torch.cat([sample["id"] for sample in samples]),
        "nsentences": sum(sample["nsentences"] for sample in samples),
        "ntokens": sum(sample["ntokens"] for sample in samples),
        "net_input": {
            "src_tokens": _stack_tokens([x["src_tokens"] for x in inputs], pad, left_pad_source),
            "src_lengths": torch.cat([x["src_lengths"] for x in inputs]),
            "prev_output_tokens": _stack_tokens([x["prev_output_tokens"] for x in inputs], pad, left_pad_target),
        },
        "target": _stack_tokens([sample["target"] for sample in samples], pad, left_pad_target),
    }


def _trim(tokens: Tensor, pad: int, left: bool) -> Tensor:
    """Drop the columns that hold only padding (an LSTM encoder packs exactly max(src_lengths) steps)."""
    used = tokens.ne(pad).any(0).nonzero()
    if used.numel() == 0:
        return tokens
    return tokens[:, int(used.min()):] if left else tokens[:, :int(used.max()) + 1]


def sentences_within(sample: dict, max_tokens: int, pad: int, seed: int, left_pad_source: bool,
                     left_pad_target: bool) -> tuple[dict, bool]:
    """A random part of `sample`'s sentences (in their order, re-padded to their own length) with at most
    `max_tokens` target tokens, at least one sentence; and whether that is the whole sample (always so for
    max_tokens 0)."""
    lengths = sample["target"].ne(pad).sum(1)
    if max_tokens == 0 or int(lengths.sum()) <= max_tokens:
        return sample, True
    _check_fields(sample["net_input"])
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).to(lengths.device)
    count = max(1, int((lengths[order].cumsum(0) <= max_tokens).sum()))
    kept = order[:count].sort().values
    target = _trim(sample["target"][kept], pad, left_pad_target)
    net_input = sample["net_input"]
    prev, width = net_input["prev_output_tokens"][kept], target.size(1)
    return {
        "id": sample["id"][kept],
        "nsentences": count,
        "ntokens": int(lengths[kept].sum()),
        "net_input": {"src_tokens": _trim(net_input["src_tokens"][kept], pad, left_pad_source),
                      "src_lengths": net_input["src_lengths"][kept],
                      "prev_output_tokens": prev[:, -width:] if left_pad_target else prev[:, :width]},
        "target": target,
    }, False
