"""Peak memory of the dynamic loss with the diagonal + low-rank W at NMT
vocabulary sizes, next to plain cross-entropy on the same log-probabilities.

The loss (forward and backward) for N target tokens costs O(N C + C r) memory
with the low-rank W: the same order as cross-entropy's N x C log-probabilities.
A dense C x C W would need C^2 floats (printed, never allocated).  Each cell
runs in a fresh process (see bench_memory.py).
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from bench_memory import PeakMemory, measure_in_child  # scripts/bench_memory.py: a script's own folder is on its path

from fairseq_l2t.loss_family import dynamic_loss
from fairseq_l2t.loss_structures import DiagLowRankStructure


def child(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.manual_seed(0)
    logits = torch.randn(args.tokens, args.vocab, device=device, requires_grad=True)
    target = torch.randint(0, args.vocab, (args.tokens,), device=device)
    structure = DiagLowRankStructure(args.vocab, args.rank)
    params = {k: (v + 0.01 * torch.randn_like(v)).to(device).requires_grad_() for k, v in
              structure.init_params().items()}
    with PeakMemory(device) as peak:
        lprobs = F.log_softmax(logits, -1)
        if args.loss == "ce":
            loss = F.nll_loss(lprobs, target)
        else:
            loss = dynamic_loss(lprobs, target, structure, params, squash=False)
        loss.backward()
    print(json.dumps({"peak_extra_bytes": peak.extra_bytes}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, nargs="+", default=[8000, 16000, 32000])
    parser.add_argument("--tokens", type=int, default=2048, help="target tokens in the batch")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--loss", default="lowrank", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.vocab = args.vocab[0]
        return child(args)
    print(f"{args.tokens} target tokens, rank {args.rank}, device {args.device}; peak extra memory of "
          f"log_softmax + loss + backward\n")
    print(f"{'vocabulary C':>12s} {'cross-entropy':>15s} {'diag+low-rank':>15s} {'ratio':>7s} {'dense W would need':>20s}")
    for vocab in args.vocab:
        cells = {}
        for loss in ("ce", "lowrank"):
            result = measure_in_child(__file__, ["--vocab", str(vocab), "--tokens", str(args.tokens), "--rank",
                                                 str(args.rank), "--device", args.device, "--loss", loss])
            cells[loss] = result["peak_extra_bytes"]
        dense = vocab * vocab * 4
        print(f"{vocab:>12d} {cells['ce'] / 2**20:>11.1f} MiB {cells['lowrank'] / 2**20:>11.1f} MiB "
              f"{cells['lowrank'] / max(cells['ce'], 1):>7.2f} {dense / 2**30:>16.1f} GiB")


if __name__ == "__main__":
    main()
