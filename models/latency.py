"""Inference cost of a candidate: parameter count and measured latency per image on the ranking's device.

Users pick under a latency or size budget, so every ranking reports both. Latency is the median over
``repeats`` timed forward passes in eval mode under ``torch.inference_mode`` after ``warmup`` untimed ones,
divided by the batch size; on CUDA the device is synchronised around each pass.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn

__all__ = ["count_parameters", "measure_latency"]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def measure_latency(model: nn.Module, input_size: tuple[int, int, int], device: torch.device | str = "cpu", *,
                    batch_sizes: tuple[int, ...] = (1, 64), warmup: int = 2, repeats: int = 5) -> dict[int, float]:
    """Milliseconds per image at each batch size: ``{batch: ms_per_image}``.

    Parameters
    ----------
    model : the full candidate (backbone + probe), moved to ``device`` by the caller or here.
    input_size : (C, H, W) the candidate sees.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = {}
    try:
        for batch in batch_sizes:
            x = torch.randn((batch, *input_size), device=device)
            for _ in range(warmup):
                model(x)
            times = []
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t0)
            out[batch] = 1000 * statistics.median(times) / batch
    finally:
        model.train(was_training)
    return out
