"""ncap: model selection by neural capacitance (β_eff of the probe's line graph; Jiang et al. 2024).

The repository's top-level folders are this package's layers, installed under the one name ``ncap``:

    ncap.capacitance   the math (β_eff, predictor, network science)
    ncap.models        data, candidates, probe, training loop, harness, zoo, pruning
    ncap.bench         benchmarks
    ncap.service       ranking jobs, typed documents, store, BentoML service, CLI
"""
from __future__ import annotations

import importlib.metadata

__version__ = importlib.metadata.version("ncap")
