"""Issue 13, chaos (short version of ``python -m ncap.service.measurements.chaos``): kill -9 the training process, the BentoML
worker and the server's main process, each at a random moment of a 3-candidate job on one server (restarted
when it goes down). Every job finishes, no finished candidate is retrained, and the store is intact.

The ranking function is ``ncap.service.measurements.chaos.slow_runner`` (no training, ~5 s per job) so that the kills land
inside the job; the committed 30-run table (bench/results/chaos.md) kills real training."""
from __future__ import annotations

import random

import pytest
from test_service_helpers import Server

from ncap.service.measurements.chaos import kill_during_job

pytestmark = pytest.mark.slow


def test_every_job_survives_a_kill9_of_any_of_its_processes(tmp_path):
    rng = random.Random(13)
    srv = Server(tmp_path, token="chaos", runner="ncap.service.measurements.chaos:slow_runner")
    srv.start()
    try:
        rows = [kill_during_job(srv, rng, role, max_delay=3.0, job_timeout=180) for role in
                ("trainer", "worker", "server")]
    finally:
        srv.stop()
    for row in rows:
        assert row["ok"], row
        assert row["killed"].startswith(row["role"]), row  # the process existed and was killed
    assert [r["restarted"] for r in rows] == [False, False, True]
