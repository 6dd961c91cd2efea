"""API fuzzing of the ranking service: requests generated from its OpenAPI spec, and raw bodies, against a
live server on 127.0.0.1; no response may be a 5xx.

    python -m ncap.service.measurements.api_fuzz [--cases 10000] [--minutes 40] [--seed 0]

Two sources of requests, interleaved operation by operation:

* ``schemathesis`` cases of every operation in ``/docs.json`` (JSON bodies for the JSON routes, structured
  multipart bodies with binary files for ``/jobs/submit``). BentoML declares the spec as OpenAPI 3.0 but
  writes JSON Schema 2020-12 bounds (numeric ``exclusiveMinimum``), so it is read as 3.1.
* ``hypothesis`` strategies for what a spec cannot describe: raw multipart bodies (random, missing or wrong
  boundaries, unknown, repeated or file-less fields, bodies cut anywhere, garbage), ``.npz`` files with
  random ``.npy`` headers (shapes up to 10^12 images, every dtype kind, Fortran order, short data) and
  ``.zip`` files (image folders, truncated at random, random member names and bytes), random content types
  and JSON bodies on every JSON route.

The server under test runs :func:`instant_runner` (a ranking function that trains nothing), so accepted
jobs finish at once instead of training. Results (status counts per operation, every 5xx with its request)
go to bench/results/api_fuzz.{json,md}; the run stops at ``--cases`` or ``--minutes``, whichever comes first.
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"  # the repository's bench/results
SMALL_CONFIG = {"candidates": ["resnet10t=random"], "epochs": 1, "image_size": 32}
JSON_ROUTES = ("/jobs/status", "/jobs/result", "/jobs/plot", "/jobs/artifacts", "/jobs/cancel", "/jobs/delete",
               "/jobs/list", "/predict", "/jobs/submit")


# ------------------------------------------------------------------------------------ server side
def instant_runner(dataset, candidates, config, out_dir, *, completed=None, on_candidate_done=None, **_):
    """A ranking function that trains nothing: every candidate is 'ok' at once (for fuzzing servers)."""
    records = []
    for i, name in enumerate(candidates or ["digits-demo"]):
        rec = dict((completed or {}).get(name) or {"candidate": str(name), "status": "ok", "rank": i + 1,
                                                   "predicted_accuracy": 0.5, "predicted_std": 0.1})
        if on_candidate_done is not None and name not in (completed or {}):
            on_candidate_done(rec)
        records.append(rec)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return {"candidates": records, "config": config.to_dict(),
            "dataset": {"source": str(dataset), "n_images": 0, "n_train": 0, "n_val": 0, "classes": []}}


# ------------------------------------------------------------------------------------- payloads
_DTYPES = ["<f4", "<f8", ">f8", "|u1", "<u2", "<i8", "|b1", "<c8", "|O", "<U3", "|S5", "|V4", "<M8[s]", "<f2"]


@st.composite
def npy_bytes(draw, name: str = "x") -> bytes:
    """A ``.npy`` member: a random header (shape, dtype, order), then data of the declared size, shorter,
    longer or random."""
    shape = tuple(draw(st.lists(st.one_of(st.integers(0, 12), st.integers(0, 10**12)), max_size=5)))
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype),
                                               "fortran_order": draw(st.booleans()), "shape": shape})
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared <= 4096:
        size = draw(st.sampled_from([declared, max(declared - 1, 0), declared + 3, draw(st.integers(0, 256))]))
    else:
        size = draw(st.integers(0, 4096))
    buf.write(draw(st.randoms(use_true_random=False)).randbytes(size))
    return buf.getvalue()


@st.composite
def npz_payloads(draw) -> bytes:
    """An ``.npz``: valid small datasets, arrays with random headers, missing arrays, or a cut archive."""
    kind = draw(st.sampled_from(["valid", "headers", "cut"]))
    buf = io.BytesIO()
    if kind == "valid" or kind == "cut":
        n = draw(st.integers(1, 24))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        x = rng.integers(0, 256, (n, *draw(st.sampled_from([(8, 8), (8, 8, 3), (3, 8, 8), (8, 8, 4)]))), dtype=np.uint8)
        y = np.arange(n) % draw(st.integers(1, 4))
        (np.savez_compressed if draw(st.booleans()) else np.savez)(buf, x=x, y=y)
    else:
        names = draw(st.lists(st.sampled_from(["x", "y", "class_names", "z"]), min_size=0, max_size=3, unique=True))
        with zipfile.ZipFile(buf, "w", draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as zf:
            for name in names:
                zf.writestr(f"{name}.npy", draw(npy_bytes(name)))
    data = buf.getvalue()
    if kind == "cut":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    return data


@st.composite
def zip_payloads(draw) -> bytes:
    """A ``.zip`` image folder (PNG or random bytes as images, random member names), possibly cut."""
    from PIL import Image

    buf = io.BytesIO()
    if draw(st.booleans()):  # a valid folder: 2 classes of 2-4 PNGs
        with zipfile.ZipFile(buf, "w") as zf:
            for cls in ("cats", "dogs"):
                for i in range(draw(st.integers(2, 4))):
                    img = io.BytesIO()
                    Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(img, format="PNG")
                    zf.writestr(f"pets/{cls}/{i}.png", img.getvalue())
        return buf.getvalue()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(draw(st.integers(0, 6))):
            cls = draw(st.sampled_from(["cats", "dogs", "../up", "a/b", ".hidden", "x"]))
            suffix = draw(st.sampled_from([".png", ".jpg", ".txt", ""]))
            if draw(st.booleans()):
                img = io.BytesIO()
                side = draw(st.integers(1, 12))
                Image.fromarray(np.full((side, side), i * 30 % 256, np.uint8)).save(img, format="PNG")
                body = img.getvalue()
            else:
                body = draw(st.binary(max_size=200))
            zf.writestr(f"data/{cls}/{i}{suffix}", body)
    data = buf.getvalue()
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    return data


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                  max_size=4), max_leaves=12)


@st.composite
def raw_submits(draw) -> tuple[dict, bytes]:
    """(headers, body) of a raw ``/jobs/submit`` request: multipart bodies broken in every way we know."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-'()+_,./:=? "
    boundary = draw(st.one_of(st.text(alphabet, min_size=1, max_size=70),  # RFC 2046's limit, and beyond it
                              st.integers(71, 4000).map(lambda n: "b" * n))).strip() or "b"
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.one_of(st.sampled_from(["config", "dataset", "data", "", "config\"", "Dataset"]),
                              st.integers(100, 20_000).map(lambda n: "f" * n)))
        filename = draw(st.sampled_from([None, "d.npz", "d.zip", "../../etc/passwd.npz", "", "x.tar", "é.npz"]))
        if name == "config" and draw(st.booleans()):
            body = json.dumps(draw(st.sampled_from([SMALL_CONFIG, {}, {"epochs": True}, {"confg": 1}]))).encode()
        elif name == "config":
            body = json.dumps(draw(_JSON)).encode() if draw(st.booleans()) else draw(st.binary(max_size=100))
        else:
            body = draw(st.one_of(npz_payloads(), zip_payloads(), st.binary(max_size=300)))
        disp = f'form-data; name="{name}"' + ("" if filename is None else f'; filename="{filename}"')
        parts.append(f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + body + b"\r\n")
    body = b"".join(parts)
    if draw(st.booleans()):
        body += f"--{boundary}--\r\n".encode()
    mutation = draw(st.sampled_from(["none", "none", "cut", "garbage", "prefix"]))
    if mutation == "cut" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif mutation == "garbage":
        body = draw(st.binary(max_size=400))
    elif mutation == "prefix":
        body = draw(st.binary(max_size=20)) + body
    ctype = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}", "multipart/form-data",
                                  f'multipart/form-data; boundary="{boundary}"', "application/json", "text/plain",
                                  "application/x-www-form-urlencoded", "multipart/mixed; boundary=x", None]))
    return {**({} if ctype is None else {"Content-Type": ctype}), **draw(long_headers())}, body


@st.composite
def long_headers(draw) -> dict:
    """Extra request headers: none, or long names and values (together under the server's 64 KiB)."""
    if draw(st.booleans()):
        return {}
    out = {}
    for _ in range(draw(st.integers(1, 3))):
        name = "X-" + draw(st.sampled_from(["h", "Forwarded-For", "Real-IP", "Long"])) * draw(st.integers(1, 2000))
        out[name[:6000]] = draw(st.sampled_from(["v", "127.0.0.1", "x" * 3000, "ü" * 500, "a b"]))
    return {k.encode(): v.encode() for k, v in out.items()}  # bytes: httpx sends str headers as ASCII only


@st.composite
def raw_json_requests(draw) -> tuple[str, dict, bytes]:
    """(route, headers, body) of a JSON route: random JSON, broken JSON, NaN literals, deep nesting."""
    route = draw(st.sampled_from(JSON_ROUTES))
    kind = draw(st.sampled_from(["json", "json", "broken", "nan", "deep", "binary"]))
    if kind == "json":
        body = json.dumps(draw(_JSON)).encode()
    elif kind == "broken":
        body = json.dumps(draw(_JSON)).encode()[: draw(st.integers(0, 30))]
    elif kind == "nan":
        body = b'{"trajectories": [{"beta_eff": [NaN, Infinity, -Infinity], "val_accuracy": [0.1, 0.2, NaN]}],' \
               b' "t0": 1, "job_id": "x", "limit": 1e999, "config": {"lr": NaN}}'
    elif kind == "deep":
        depth = draw(st.integers(100, 100_000))
        body = b"[" * depth + b"]" * draw(st.integers(0, depth))
    else:
        body = draw(st.binary(max_size=200))
    ctype = draw(st.sampled_from(["application/json", "text/plain", "application/vnd.bentoml+pickle",
                                  "multipart/form-data; boundary=z", None]))
    return route, {**({} if ctype is None else {"Content-Type": ctype}), **draw(long_headers())}, body


# ------------------------------------------------------------------------------------------ fuzzing
class Tally:
    """Status counts per operation, and every response >= 500 with the request that caused it."""

    def __init__(self, max_cases: int, deadline: float):
        self.counts: Counter = Counter()
        self.failures: list[dict] = []
        self.mismatches: Counter = Counter()  # 4xx bodies that do not match the spec's declared error schema
        self.checked = 0
        self.mismatch_examples: list[dict] = []
        self.max_cases, self.deadline = max_cases, deadline

    @property
    def done(self) -> bool:
        return sum(self.counts.values()) >= self.max_cases or time.time() >= self.deadline

    def record(self, label: str, status: int, request: str, schema_error: str | None = None) -> None:
        self.counts[(label, status)] += 1
        if schema_error is not None:
            self.mismatches[label] += 1
            if len(self.mismatch_examples) < 20:
                self.mismatch_examples.append({"operation": label, "status": status, "request": request[:1000],
                                               "mismatch": schema_error[:1000]})
        if status >= 500 and len(self.failures) < 50:
            self.failures.append({"operation": label, "status": status, "request": request[:2000]})


def _spec_operations(url: str, headers: dict) -> list:
    import schemathesis

    raw = httpx.get(url + "/docs.json", headers=headers, timeout=30).json()
    raw["openapi"] = "3.1.0"  # BentoML writes 2020-12 bounds under a 3.0 label (see the module docstring)
    schema = schemathesis.openapi.from_dict(raw)
    return [r.ok() for r in schema.get_all_operations()]


def _error_mismatch(case, response) -> str | None:
    """Why a 4xx response does not match the error schema the spec declares for it, or None."""
    from schemathesis.specs.openapi.checks import response_schema_conformance

    try:
        case.validate_response(response, checks=[response_schema_conformance])
    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - schemathesis raises a group of failures
        return str(exc)
    return None


def _run(strategy, n: int, call, seed: int) -> None:
    """Draw up to ``n`` examples of ``strategy`` and ``call`` each (no shrinking: nothing is asserted here)."""

    @hypothesis_seed(seed)
    @settings(max_examples=n, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def body(example) -> None:
        call(example)

    body()


class _Fuzzer:
    """One fuzzing session against ``url``: each ``on_*`` method sends one generated example and records it."""

    def __init__(self, url: str, headers: dict, tally: Tally) -> None:
        self.url, self.headers, self.tally = url, headers, tally
        self.client = httpx.Client(base_url=url, headers=headers, timeout=120)
        self.known: list[str] = []  # ids of jobs the fuzzed uploads created

    def spec_call(self, label: str):
        def call(case) -> None:
            if self.tally.done:
                return
            try:
                r = case.call(base_url=self.url, headers=self.headers, timeout=120)
            except Exception as exc:  # noqa: BLE001 - a connection error is a failure of the server too
                self.tally.record(label, 599, f"{case.method} {case.path} raised {exc!r}")
                return
            self.tally.record(label, r.status_code, f"{case.method} {case.path} {case.media_type} {case.body!r}",
                              _error_mismatch(case, r) if 400 <= r.status_code < 500 else None)
            self.tally.checked += 400 <= r.status_code < 500
        return call

    def on_raw_submit(self, example) -> None:
        if self.tally.done:
            return
        hdrs, body = example
        r = self.client.post("/jobs/submit", content=body, headers=hdrs)
        self.tally.record("raw POST /jobs/submit", r.status_code, f"{hdrs} {body[:1500]!r}")

    def on_raw_json(self, example) -> None:
        if self.tally.done:
            return
        route, hdrs, body = example
        r = self.client.post(route, content=body, headers=hdrs)
        self.tally.record(f"raw POST {route}", r.status_code, f"{route} {hdrs} {body[:1500]!r}")

    def on_upload(self, example) -> None:
        if self.tally.done:
            return
        kind, data, config = example
        r = self.client.post("/jobs/submit", files={"dataset": (f"fuzz.{kind}", data, "application/octet-stream")},
                             data={"config": json.dumps(config)})
        self.tally.record(f"upload .{kind}", r.status_code, f"{config} {data[:1500]!r}")
        if r.status_code == 200:
            self.known.append(r.json()["job_id"])

    def on_job(self, example) -> None:
        if self.tally.done:
            return
        route, index, name = example
        job_id = self.known[index % len(self.known)] if self.known else "none"
        r = self.client.post(route, json={"job_id": job_id, **({"name": name} if route == "/jobs/plot" else {})})
        self.tally.record(f"known id {route}", r.status_code, f"{route} {job_id} {name!r}")

    def sources(self) -> list[tuple[str, Any, Any]]:
        """(label, hypothesis strategy, call) for every operation of the OpenAPI document and the raw sources."""
        uploads = st.tuples(st.just("npz"), npz_payloads(), st.sampled_from(
            [SMALL_CONFIG, {**SMALL_CONFIG, "image_size": 8}, {**SMALL_CONFIG, "probe_width": 8192}]))
        uploads |= st.tuples(st.just("zip"), zip_payloads(), st.just(SMALL_CONFIG))
        job_calls = st.tuples(st.sampled_from(["/jobs/status", "/jobs/result", "/jobs/plot", "/jobs/artifacts",
                                               "/jobs/cancel", "/jobs/delete"]), st.integers(0, 10**6),
                              st.sampled_from(["trajectories.png", "../jobs.db", "", "x" * 200]))
        spec = [(f"{op.method.upper()} {op.path}", op.as_strategy(), self.spec_call(f"{op.method.upper()} {op.path}"))
                for op in _spec_operations(self.url, self.headers)]
        return spec + [("raw submit", raw_submits(), self.on_raw_submit),
                       ("raw json", raw_json_requests(), self.on_raw_json),
                       ("upload", uploads, self.on_upload), ("known ids", job_calls, self.on_job)]


def fuzz(url: str, token: str | None, *, max_cases: int = 500, max_seconds: float = 60.0, seed: int = 0,
         rounds: int = 1) -> Tally:
    """Fuzz the server at ``url`` in rounds (each source gets ``max_cases / (sources x rounds)`` examples per
    round, with new seeds); stops after ``max_cases`` requests or ``max_seconds``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    tally = Tally(max_cases, time.time() + max_seconds)
    fuzzer = _Fuzzer(url, headers, tally)
    sources = fuzzer.sources()
    share = max(1, max_cases // (len(sources) * rounds))
    try:
        r = 0
        while not tally.done:  # rounds of `share` examples per source, new seeds each round, until the budget
            for i, (_label, strategy, call) in enumerate(sources):
                if tally.done:
                    break
                _run(strategy, share, call, seed + 1000 * r + i)
            r += 1
    finally:
        fuzzer.client.close()
    return tally


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    from ncap.service.measurements.live_server import LiveServer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--minutes", type=float, default=40.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ncap-fuzz-") as tmp:
        srv = LiveServer(Path(tmp), token="fuzz-token", runner="ncap.service.measurements.api_fuzz:instant_runner",
                         max_queued_jobs="20", max_upload_mb="2", max_job_memory_gb="4")
        srv.start()
        t0 = time.time()
        try:
            tally = fuzz(srv.url, srv.token, max_cases=args.cases, max_seconds=60 * args.minutes, seed=args.seed,
                         rounds=4)
            healthy = srv.healthy()
        finally:
            srv.stop()
        wall = time.time() - t0
    write(tally, wall, healthy, args)
    n5 = sum(n for (_op, status), n in tally.counts.items() if status >= 500)
    bad = sum(tally.mismatches.values())
    print(f"{sum(tally.counts.values())} requests in {wall:.0f} s, {n5} responses >= 500, {bad} of "
          f"{tally.checked} 4xx bodies not matching the spec")
    return 0 if n5 == 0 and bad == 0 else 1


def write(tally: Tally, wall: float, healthy: bool, args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    by_op: dict[str, Counter] = {}
    for (op, status), n in tally.counts.items():
        by_op.setdefault(op, Counter())[status] += n
    total = sum(tally.counts.values())
    n5 = sum(n for (_op, status), n in tally.counts.items() if status >= 500)
    meta = {"command": f"python -m ncap.service.measurements.api_fuzz --cases {args.cases} --minutes {args.minutes:g} "
                       f"--seed {args.seed}", "machine": f"{platform.machine()}, {platform.python_version()}",
            "requests": total, "responses_5xx": n5, "wall_s": round(wall, 1), "healthy_after": healthy,
            "spec_4xx_checked": tally.checked, "spec_4xx_mismatches": sum(tally.mismatches.values())}
    (args.out / "api_fuzz.json").write_text(json.dumps(
        {**meta, "by_operation": {op: dict(sorted(c.items())) for op, c in sorted(by_op.items())},
         "failures": tally.failures, "mismatch_examples": tally.mismatch_examples}, indent=2))
    statuses = sorted({s for c in by_op.values() for s in c})
    lines = ["# API fuzzing: responses by operation and status", "",
             (f"Command: `{meta['command']}` against `ncap serve` on 127.0.0.1 (ranking function "
             f"`instant_runner`). {total} requests in {wall:.0f} s; **{n5} responses >= 500**; server healthy "
             f"after: {healthy}. Every 4xx of a spec-generated request is checked against the error schema "
             f"the OpenAPI spec declares: {meta['spec_4xx_checked']} checked, **{meta['spec_4xx_mismatches']} "
             "mismatches**."), "",
             "| operation | " + " | ".join(str(s) for s in statuses) + " | total |",
             "|---|" + "---:|" * (len(statuses) + 1)]
    for op, c in sorted(by_op.items()):
        lines.append(f"| {op} | " + " | ".join(str(c.get(s, 0)) for s in statuses) + f" | {sum(c.values())} |")
    (args.out / "api_fuzz.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
