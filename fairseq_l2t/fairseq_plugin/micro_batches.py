"""One lookahead batch from the micro-batches of a fairseq update.

With --update-freq N an update is N micro-batches, each padded on its own.
The teacher's lookahead step must see the whole update (so that one process
with --update-freq 2 and two data-parallel processes with one micro-batch
each take the same lookahead step), so the micro-batches are re-padded to a
common length and stacked; padding is masked everywhere, so the stacked
batch gives every real token the same loss as its own micro-batch did.
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


def stack_micro_batches(samples: list[dict], pad: int, left_pad_source: bool, left_pad_target: bool) -> dict:
    """A translation sample holding the sentences of all `samples`, in order."""
    if len(samples) == 1:
        return samples[0]
    inputs = [sample["net_input"] for sample in samples]
    unknown = set(inputs[0]) - {"src_tokens", "src_lengths", "prev_output_tokens"}
    if unknown:
        raise ValueError(f"cannot stack translation micro-batches with net_input fields {sorted(unknown)}")
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
