"""The one JSON sanitiser: strict JSON out of numpy, torch, NaN, paths and plain objects."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ncap.jsonsafe import to_jsonable


@dataclasses.dataclass
class Point:
    x: float
    label: str


class Thing:
    def __init__(self):
        self.value = np.int64(4)
        self._hidden = "not written"


def test_nested_document_becomes_strict_json():
    doc = {
        "nan": float("nan"), "inf": -np.inf, "np_float": np.float32(0.25), "np_int": np.int64(7),
        "flag": np.bool_(True), "array": np.array([[1.0, np.nan], [np.inf, 2.0]]),
        "tensor": torch.tensor([0.5, float("nan")]), "tuple": (1, (2.0, float("inf"))),
        "path": Path("/tmp/x.db"), 3: "int key", "point": Point(float("nan"), "p"), "thing": Thing(),
        "plain": [None, "s", 1, 2.5, False],
    }
    out = to_jsonable(doc)
    assert out == {
        "nan": None, "inf": None, "np_float": 0.25, "np_int": 7, "flag": True,
        "array": [[1.0, None], [None, 2.0]], "tensor": [0.5, None], "tuple": [1, [2.0, None]],
        "path": "/tmp/x.db", "3": "int key", "point": {"x": None, "label": "p"}, "thing": {"value": 4},
        "plain": [None, "s", 1, 2.5, False],
    }
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert type(out["np_int"]) is int and type(out["np_float"]) is float and type(out["flag"]) is bool


def test_works_as_json_dumps_default_hook():
    doc = {"a": np.arange(3), "b": np.float64(1.5), "c": object.__new__(Thing)}
    text = json.dumps(doc, default=to_jsonable)
    assert json.loads(text) == {"a": [0, 1, 2], "b": 1.5, "c": {}}
    assert to_jsonable(slice(1, 2)) == "slice(1, 2, None)"  # no attributes: its str


def test_write_json_replaces_the_file_in_one_rename(tmp_path, monkeypatch):
    import json
    import os

    from ncap.jsonsafe import write_json

    path = tmp_path / "a" / "doc.json"
    write_json(path, {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    renames = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((str(a), str(b))), real(a, b)))
    write_json(path, '{"x": 2}')  # text is written as it is
    assert json.loads(path.read_text()) == {"x": 2}
    assert renames == [(str(path) + f".tmp{os.getpid()}", str(path))] and list(path.parent.iterdir()) == [path]
