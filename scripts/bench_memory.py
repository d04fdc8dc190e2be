"""Peak-memory measurement for the benchmark scripts.

On CUDA: torch's peak allocated bytes.  On the CPU torch keeps no such counter,
so each measurement runs in a fresh child process, resets the kernel's resident
high-water mark (VmHWM, via /proc/self/clear_refs) just before the measured
call, and reports that mark afterwards minus the resident memory before.
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


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


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
            reset_peak_rss()
            self._before = current_rss_bytes()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.extra_bytes = torch.cuda.max_memory_allocated(self.device) - self._before
        else:
            self.extra_bytes = peak_rss_bytes() - self._before
        return False
