"""The same mistake gets the same words from `ncap rank`, `ncap.rank` and the service (issue 23): each message
comes from one place (models/data.missing_dataset_error, models/registry, Recipe's validator). Every case is
asked of all three interfaces here; the service refuses with a 400 before a job exists."""
from __future__ import annotations

import pytest
from test_service_helpers import Server

import ncap
from ncap.service.cli import main

pytestmark = pytest.mark.slow
TOKEN = "parity-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    srv = Server(tmp, token=TOKEN, runner="ncap.service.measurements.api_fuzz:instant_runner",
                 env={"HF_HUB_CACHE": str(tmp / "empty-hub")})
    srv.start()
    yield srv
    srv.stop()


# (what is wrong, CLI arguments, ncap.rank arguments, service config, the words all three must say)
CASES = [
    ("unknown dataset", ["--data", "digitz"], {"dataset": "digitz"}, {"dataset": "digitz"},
     ["unknown dataset 'digitz'", "did you mean 'digits'?", "known named datasets: digits"]),
    ("misspelt zoo name", ["--candidates", "resnet18-mnsit"], {"candidates": "resnet18-mnsit"},
     {"candidates": ["resnet18-mnsit"]}, ["candidate 'resnet18-mnsit'", "did you mean resnet18-mnist"]),
    ("no local weights", ["--candidates", "resnet10t"], {"candidates": "resnet10t"}, {"candidates": ["resnet10t"]},
     ["no cached pretrained weights for 'resnet10t'", "'resnet10t=random'"]),
    ("too few observations for beta_eff", ["--epochs", "1", "--ranker", "beta_eff"], {"epochs": 1, "ranker": "beta_eff"},
     {"epochs": 1, "ranker": "beta_eff"}, ["needs at least 3 observations", "use epochs >= 2"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_one_mistake_one_message_everywhere(case, server, capsys, monkeypatch, tmp_path):
    _what, argv, kwargs, config, words = case
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    assert main(["rank", *argv, "--out", str(tmp_path / "out")]) == 2
    cli = capsys.readouterr().err
    with pytest.raises((ValueError, TypeError)) as python:
        ncap.rank(**{"dataset": "digits", **kwargs}, progress=False)
    r = server.submit(config)
    assert r.status_code == 400, r.text
    service = r.json()["error"]
    for text, where in ((cli, "CLI"), (str(python.value), "ncap.rank"), (service, "service")):
        for word in words:
            assert word in text, f"{where} does not say {word!r}: {text}"
    assert "Traceback" not in cli
