"""Peak-memory measurement for the benchmark scripts.

On CUDA: torch's peak allocated bytes.  On the CPU torch keeps no such counter,
so each measurement runs in a fresh child process and reports its peak resident
memory (ru_maxrss) minus its resident memory just before the measured call.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys

import torch


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_in_child(script: str, args: list[str]) -> dict:
    """Run `script --child ARGS` in a fresh interpreter and parse the JSON line it prints last."""
    done = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class PeakMemory:
    """Context manager: .extra_bytes is the peak memory added inside the block."""

    def __init__(self, device: torch.device):
        self.device = device
        self.extra_bytes = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        else:
            self._before = current_rss_bytes()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.extra_bytes = torch.cuda.max_memory_allocated(self.device) - self._before
        else:
            self.extra_bytes = peak_rss_bytes() - self._before
        return False
