"""The web page (issue #24) in a real browser against a real ``ncap serve``.

Chromium from the distribution (``/usr/bin/chromium``) driven by Playwright for Python; without either the
module is skipped, unless ``NCAP_REQUIRE_BROWSER=1`` (CI), where that is a failure. The server runs
:func:`paced_runner`: it trains nothing but reports epochs through the job's callbacks at a fixed pace (so
progress visibly advances without CPU), fails candidates labelled ``broken...`` with a reason holding HTML, and
writes its document with the real ``write_document`` (so the three plots exist). The page is served under the
server's Content-Security-Policy: a page error or a CSP violation fails the test that caused it.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
TOKEN = "web-page-token"
EPOCH_S = 0.6  # seconds per epoch of paced_runner (two observations per epoch)
SLOW_EPOCH_S = 30.0  # candidates labelled 'slow...'
XSS_CLASS = "<img src=x onerror=alert(1)>"  # a class folder name (no '/', so it is one zip folder)
XSS_LABEL = "<img src onerror alert(1)>"  # a candidate label: the label rule refuses ':', '=', ',' and '/'
XSS_ERROR = "<img src=x onerror=alert(document.domain)> simulated failure"
CLI_COLUMNS = ["Rank", "Candidate", "Predicted acc. (β_eff) %", "P(best)", "Last acc. %", "Params",
               "ms/img b1 / b64", "Status"]


# ---------------------------------------------------------------------------------------- the runner
class Cancelled(Exception):
    """Named like ncap.models.harness.Cancelled, which the job worker recognises by name."""


def _classes(dataset) -> list[str]:
    path = Path(str(dataset)) if dataset else None
    if path is not None and path.is_dir():
        return sorted({p.parent.name for p in path.rglob("*") if p.is_file()})
    return [str(d) for d in range(10)]


def paced_runner(dataset, candidates, config, out_dir, *, completed=None, on_candidate_start=None,
                 on_candidate_done=None, on_epoch=None, should_stop=None, keep=0, **_):
    """A ranking function that trains nothing: ``config.epochs`` epochs of EPOCH_S seconds per candidate
    (SLOW_EPOCH_S for labels starting 'slow'), two observations per epoch reported through ``on_epoch``; a
    made-up trajectory per candidate; labels starting 'broken' fail with :data:`XSS_ERROR`. The document goes
    through the real ``write_document``, plots included."""
    from ncap.service.documents import CandidateRecord, DatasetInfo, RankingDocument
    from ncap.service.ranking import mark_pareto, rank_runs, write_document

    names = [c.split(":", 1)[0] if ":" in c else c for c in candidates or ["digits-demo"]]
    records = []
    for i, name in enumerate(names):
        if name in (completed or {}):
            records.append(CandidateRecord.model_validate(completed[name]))
            continue
        if on_candidate_start is not None:
            on_candidate_start(name)
        pace = SLOW_EPOCH_S if name.startswith("slow") else EPOCH_S
        t0 = time.time()
        epochs, accs, betas = [], [], []
        for k in range(1, 2 * config.epochs + 1):
            deadline = time.time() + pace / 2
            while time.time() < deadline:
                if should_stop is not None and should_stop():
                    raise Cancelled("cancelled")
                time.sleep(0.05)
            e = k / 2
            acc = 0.35 + 0.5 * (1 - math.exp(-e * (1 + i) / 2))
            epochs.append(e)
            accs.append(acc)
            betas.append(2.0 / (1 + e) + 0.1 * i)
            if on_epoch is not None:
                on_epoch(name, e, {"val_accuracy": acc})
        if name.startswith("broken"):
            rec = CandidateRecord(candidate=name, status="failed", error=XSS_ERROR)
        else:
            rec = CandidateRecord(candidate=name, status="ok", epoch=epochs, val_accuracy=accs, beta_eff=betas,
                                  predicted_accuracy=min(accs[-1] + 0.05, 0.99), predicted_std=0.02 + 0.01 * i,
                                  observed_accuracy=accs[-1], n_params=1_000_000 * (i + 1),
                                  latency_ms={1: 1.5 + i, 64: 0.2 + 0.1 * i}, wall_time_s=time.time() - t0,
                                  prediction_method="beta_extrapolation")
        if on_candidate_done is not None:
            on_candidate_done(rec)
        records.append(rec)
    classes = _classes(dataset)
    doc = RankingDocument(
        candidates=mark_pareto(rank_runs(records, seed=config.seed, ranker=config.ranker, t0=config.t0)),
        config=config, dataset=DatasetInfo(source=str(dataset or "digits"), n_images=12 * len(classes), n_train=10,
                                           n_val=2, classes=classes), wall_time_s=1.0)
    if keep:  # a stand-in for the winner's kept model (the real one: tests/test_keep.py)
        from ncap.service.ranking import keep_top

        best = next(r for r in doc.candidates if r.status == "ok")
        folder = Path(out_dir) / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        from ncap.service.ranking import checkpoint_name

        (folder / checkpoint_name(best.candidate)).write_bytes(b"weights of " + best.candidate.encode())
        keep_top(doc, folder, keep)
    write_document(doc, Path(out_dir), make_plots=True)
    return doc


# ----------------------------------------------------------------------------------------- fixtures
def _browser_problem() -> str | None:
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "no chromium on PATH (Debian: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright)"
    return None


def _skip_or_fail(reason: str):
    if os.environ.get("NCAP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"NCAP_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    problem = _browser_problem()
    if problem:
        _skip_or_fail(problem)
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=shutil.which("chromium") or shutil.which("chromium-browser"),
                                   args=["--no-sandbox", "--disable-dev-shm-usage"])
        except Error as exc:
            _skip_or_fail(f"chromium did not start: {str(exc).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, browser):
    from test_service_helpers import Server

    srv = Server(tmp_path_factory.mktemp("web"), token=TOKEN, runner="test_web_page:paced_runner",
                 max_upload_mb="1", max_job_memory_gb="4")
    srv.start()
    yield srv
    srv.stop()


class Watch:
    """What a page did that a test must not see: dialogs (alert from injected HTML), page errors, CSP
    violations."""

    def __init__(self, page):
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.accept_confirms = None  # None: a confirm() fails the test; True / False: accept / dismiss it
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._console)

    def _dialog(self, dialog):
        if dialog.type == "confirm" and self.accept_confirms is not None:
            (dialog.accept if self.accept_confirms else dialog.dismiss)()
            return
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _console(self, msg):
        if msg.type == "error" and ("Content Security Policy" in msg.text or "Refused to" in msg.text):
            self.errors.append(f"CSP: {msg.text}")


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.watch = Watch(pg)
    yield pg
    watch = pg.watch
    context.close()
    assert not watch.dialogs, watch.dialogs
    assert not watch.errors, watch.errors


def sign_in(page, server, route: str = "#/new") -> None:
    page.goto(f"{server.url}/{route}")
    page.fill("#token", server.token)
    page.click("button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")
    page.wait_for_selector("main h1")


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _wait_done(page, timeout_ms: int = 90_000) -> None:
    page.wait_for_selector("#ranking-table", timeout=timeout_ms)


# -------------------------------------------------------------------------------------------- tests
def test_sign_in_wrong_token_then_right(page, server):
    response = page.goto(f"{server.url}/#/jobs")
    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "style-src 'self'" in csp, response.headers
    assert page.is_visible("#token") and page.is_hidden("#nav")
    assert page.eval_on_selector("#token", "e => e.labels.length") == 1

    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#signin-error:not([hidden])")
    error = page.text_content("#signin-error")
    assert "invalid or revoked bearer token" in error, error  # the 401's own reason
    assert page.evaluate("sessionStorage.length") == 0
    assert "not-the-token" not in page.url

    page.focus("#token")  # by keyboard: the focus ring shows, Enter signs in
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.type") == "submit"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.press("Shift+Tab")
    page.keyboard.type(server.token)
    page.keyboard.press("Enter")
    page.wait_for_selector("#nav:not([hidden])")
    assert page.text_content("main h1") == "Jobs"  # the route asked for before signing in
    assert page.evaluate("sessionStorage.getItem('ncap.token')") == server.token
    assert server.token not in page.url and "Signed in as" in page.text_content("#who")
    page.reload()  # the token survives a reload of the tab (sessionStorage)
    page.wait_for_selector("#nav:not([hidden])")

    page.click("#sign-out")
    page.wait_for_selector("#token")
    assert page.evaluate("sessionStorage.length") == 0


def test_new_ranking_form_is_generated_from_the_schema(page, server):
    sign_in(page, server)
    catalog = server.post("/catalog", {}).json()
    props = catalog["recipe_schema"]["properties"]
    for name, prop in props.items():
        control = page.query_selector(f"#field-{name}")
        assert control is not None, name
        tag = control.evaluate("e => e.tagName.toLowerCase() + ':' + (e.type || '')")
        if "enum" in prop:
            assert tag.startswith("select"), (name, tag)
        elif prop.get("type") in ("integer", "number"):
            assert tag == "input:number", (name, tag)
        if prop.get("default") is not None and prop.get("type") in ("integer", "number"):
            assert float(control.input_value()) == prop["default"], name
    assert page.get_attribute("#field-epochs", "max") == str(min(props["epochs"]["maximum"],
                                                                 catalog["limits"]["max_epochs"]))
    # every control has a <label>
    unlabeled = page.evaluate("""() => [...document.querySelectorAll('main input, main select, main textarea')]
        .filter(e => e.type !== 'hidden' && (!e.labels || e.labels.length === 0)).map(e => e.id || e.outerHTML)""")
    assert unlabeled == []
    # the candidate search filters the catalog list
    if len(catalog["candidates"]) > 1:
        first = catalog["candidates"][0]["name"]
        page.fill("#candidate-search", first)
        visible = page.eval_on_selector_all("#candidate-list li:not([hidden]) .cand-name", "es => es.map(e => e.textContent)")
        assert first in visible and len(visible) < len(catalog["candidates"])


def _new_ranking(page, server, candidates: str) -> list:
    """Sign in on the new-ranking form with ``candidates`` typed in; returns the list that collects the
    page's /jobs/submit requests."""
    sign_in(page, server)
    sent: list = []
    page.on("request", lambda r: sent.append(r) if r.url.endswith("/jobs/submit") else None)
    page.fill("#candidate-custom", candidates)
    page.press("#candidate-custom", "Enter")
    return sent


def test_submit_shows_progress_then_ranking_and_plots(page, server):
    sent = _new_ranking(page, server, "a:resnet10t=random, broken:resnet10t=random")
    page.select_option("#dataset-name", "digits")
    page.fill("#field-epochs", "4")  # the default is 4: not sent
    page.fill("#field-epochs", "5")
    page.fill("#field-image_size", "32")
    page.click("#submit-job")
    page.wait_for_url(re.compile(r".*#/job/[0-9a-f]+$"))
    assert len(sent) == 1
    body = sent[0].post_data_buffer.decode("utf-8", "replace")
    config = json.loads(re.search(r'name="config"\r\n\r\n(.*?)\r\n--', body, re.DOTALL).group(1))
    assert config == {"candidates": ["a:resnet10t=random", "broken:resnet10t=random"], "dataset": "digits",
                      "epochs": 5, "image_size": 32}  # only what differs from the defaults
    assert sent[0].headers["authorization"] == f"Bearer {server.token}"

    seen = []  # the first candidate's "epoch x of 5" as the page polls
    deadline = time.time() + 60
    while time.time() < deadline and not page.is_visible("#ranking-table"):
        texts = page.eval_on_selector_all("#candidates-table .epoch-text", "es => es.map(e => e.textContent)")
        if texts and (not seen or seen[-1] != texts[0]):
            seen.append(texts[0])
        time.sleep(0.2)
    epochs = [float(re.match(r"epoch ([\d.]+) of 5", t).group(1)) for t in seen]
    assert len({e for e in epochs if 0 < e < 5}) >= 2, seen  # progress advanced in steps, live
    assert epochs == sorted(epochs), seen

    _wait_done(page)
    headers = page.eval_on_selector_all("#ranking-table thead th", "es => es.map(e => e.textContent)")
    ranker = server.post("/catalog", {}).json()["recipe_schema"]["properties"]["ranker"]["default"]
    score_column = {"val_acc": ["Ranked by: last accuracy"], "tse_ema": ["Ranked by: −TSE-EMA"]}.get(ranker, [])
    assert headers == CLI_COLUMNS[:2] + score_column + CLI_COLUMNS[2:]  # the CLI's table, same columns
    rows = page.eval_on_selector_all("#ranking-table tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
    assert [r[0] for r in rows] == ["1", "2"]
    assert rows[0][1].startswith("a") and re.match(r"\d+\.\d ± \d+\.\d", rows[0][2 + len(score_column)]), rows
    assert rows[1][1] == "broken" and rows[1][-1] == "failed: " + XSS_ERROR
    failed = page.text_content("#failed li")
    assert failed == "broken: " + XSS_ERROR  # the reason, shown as text
    assert page.query_selector("#failed img") is None
    assert "the winner's fine-tuned model" in page.text_content("#weights-note")

    page.wait_for_function("document.querySelectorAll('#plots img[data-plot]').length === 3")
    page.wait_for_function("[...document.querySelectorAll('#plots img')].every(i => i.complete && i.naturalWidth > 0)")
    names = page.eval_on_selector_all("#plots img", "es => es.map(e => e.dataset.plot)")
    assert sorted(names) == ["pareto.png", "predicted_vs_observed.png", "trajectories.png"]
    assert all(src.startswith("blob:") for src in page.eval_on_selector_all("#plots img", "es => es.map(e => e.src)"))

    with page.expect_download() as info:
        page.click("#download-ranking")
    download = info.value
    assert download.suggested_filename == "ranking.json"
    doc = json.loads(Path(download.path()).read_text())
    assert [c["candidate"] for c in doc["candidates"]] == ["a", "broken"]
    with page.expect_download() as info:
        page.click("#download-artifacts")
    import zipfile

    with zipfile.ZipFile(info.value.path()) as zf:
        kept = doc["candidates"][0]["checkpoint"]
        assert kept.startswith("checkpoints/") and zf.read(kept) == b"weights of a" and "ranking.json" in zf.namelist()


def test_jobs_list_cancel_and_delete_ask_first(page, server):
    r = server.submit({"candidates": ["slow:resnet10t=random"], "epochs": 2, "image_size": 32})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    sign_in(page, server, "#/jobs")
    row = f"#jobs-table tr[data-job='{job_id}']"
    page.wait_for_selector(row)
    cells = page.eval_on_selector_all(f"{row} td", "cs => cs.map(c => c.textContent)")
    assert cells[0] == job_id[:8] and cells[2] == "digits" and "slow" in cells[3] and cells[4] != "—"
    assert cells[1] in ("queued", "running")

    page.watch.accept_confirms = False  # "Cancel" asks first: dismissing keeps the job
    page.click(f"{row} button:has-text('Cancel')")
    time.sleep(0.5)
    assert server.status(job_id)["state"] in ("queued", "running")

    page.watch.accept_confirms = True
    page.click(f"{row} button:has-text('Cancel')")
    page.wait_for_selector(f"{row} .badge:has-text('cancelled')", timeout=30_000)
    assert server.status(job_id)["state"] == "cancelled"

    page.click(f"{row} button:has-text('Delete')")
    page.wait_for_selector(row, state="detached")
    assert server.post("/jobs/status", {"job_id": job_id}).status_code == 404
    assert "Deleted job" in page.text_content("#banner")


def test_refusals_are_shown_where_they_belong(page, server):
    submits = _new_ranking(page, server, "resnet10t=random")
    page.fill("#field-image_size", "32")

    # a file over the server's max_upload_bytes (1 MiB here): refused before anything is sent
    page.check("#source-file")
    page.set_input_files("#dataset-file", {"name": "big.npz", "mimeType": "application/octet-stream",
                                           "buffer": b"\0" * (1024 * 1024 + 10)})
    assert "big.npz — 1.00 MiB" in page.text_content("#dataset-file-info")
    assert "more than the server accepts" in page.text_content("#dataset-error")
    page.click("#submit-job")
    assert "more than the server accepts" in page.text_content("#dataset-error")

    # a corrupt zip: the server's 400 next to the file input
    page.set_input_files("#dataset-file", {"name": "broken.zip", "mimeType": "application/zip",
                                           "buffer": b"PK\x03\x04" + b"\0" * 200})
    page.click("#submit-job")
    page.wait_for_selector("#dataset-error:not([hidden])")
    error = page.text_content("#dataset-error")
    assert error.startswith("invalid dataset: broken.zip"), error
    assert page.get_attribute("#dataset-file", "aria-invalid") == "true"
    assert len(submits) == 1

    # a recipe value the server refuses (lr must be > 0): the reason next to that field
    page.check("#source-named")
    page.fill("#field-lr", "0")
    page.click("#submit-job")
    page.wait_for_selector("#field-lr-error:not([hidden])")
    assert "lr" in page.text_content("#field-lr-error") and "greater than 0" in page.text_content("#field-lr-error")
    assert page.evaluate("document.activeElement.id") == "field-lr"
    assert page.is_hidden("#banner")
    page.fill("#field-lr", "0.001")

    # epochs over the server's max: the browser's own check stops it (max = limits.max_epochs)
    page.fill("#field-epochs", "999")
    page.click("#submit-job")
    assert page.evaluate("document.querySelector('#field-epochs').validity.rangeOverflow")
    assert len(submits) == 2
    page.fill("#field-epochs", "2")

    # 429: the queue is full
    page.route("**/jobs/submit", lambda route: route.fulfill(
        status=429, content_type="application/json",
        body=json.dumps({"error": "the queue is full (100 jobs waiting); try again later"})))
    page.click("#submit-job")
    page.wait_for_selector("#banner:not([hidden])")
    assert page.text_content("#banner .banner-text").startswith("The queue is full: the queue is full (100 jobs")
    assert "#/new" in page.url


def test_user_strings_are_shown_as_text(page, server):
    """A class folder and a candidate label that are HTML: shown literally, nothing injected, no alert."""
    from test_service_helpers import png_bytes

    data = _zip({f"set/{cls}/{i}.png": png_bytes(40 * i + (7 if cls == XSS_CLASS else 0))
                 for cls in (XSS_CLASS, "plain") for i in range(6)})
    sign_in(page, server)
    page.check("#source-file")
    page.set_input_files("#dataset-file", {"name": "pets.zip", "mimeType": "application/zip", "buffer": data})
    page.fill("#candidate-custom", f"{XSS_LABEL}:resnet10t=random")
    page.press("#candidate-custom", "Enter")
    assert page.text_content("#candidate-list li.custom .cand-name") == f"{XSS_LABEL}:resnet10t=random"
    page.fill("#field-epochs", "2")
    page.fill("#field-image_size", "32")
    page.click("#submit-job")
    page.wait_for_url(re.compile(r".*#/job/[0-9a-f]+$"))
    _wait_done(page)
    assert page.text_content("#ranking-table tbody tr td:nth-child(2) .cand-name") == XSS_LABEL
    classes = page.eval_on_selector_all("#class-list li", "es => es.map(e => e.textContent)")
    assert XSS_CLASS in classes
    assert page.eval_on_selector_all("main img:not([data-plot])", "es => es.length") == 0
    page.click("#nav a[data-route=jobs]")
    page.wait_for_selector("#jobs-table")
    assert XSS_LABEL in page.text_content("#jobs-table tbody tr:first-child")
    assert page.eval_on_selector_all("main img", "es => es.length") == 0
    time.sleep(0.3)  # an onerror handler would have fired by now


def test_lost_connection_is_retried_with_a_notice(page, server):
    sign_in(page, server, "#/jobs")
    page.wait_for_selector("#jobs-body .pager, #jobs-body .empty")
    page.route("**/jobs/list", lambda route: route.abort("connectionrefused"))
    page.click("#jobs-refresh")
    page.wait_for_selector("#connection:not([hidden])")
    assert page.text_content("#connection").startswith("Connection lost, retrying")
    page.unroute("**/jobs/list")
    page.wait_for_selector("#connection", state="hidden", timeout=15_000)
    assert page.is_hidden("#banner")


@pytest.fixture(scope="module")
def done_job(server):
    r = server.submit({"candidates": ["a:resnet10t=random", "b-with-a-long-name:resnet10t=random",
                                      "broken:resnet10t=random"], "epochs": 2, "image_size": 32})
    assert r.status_code == 200, r.text
    job_id = r.json()["job_id"]
    assert server.wait(job_id, timeout=120)["state"] == "done"
    return job_id


@pytest.mark.parametrize("width", [390, 1280])
def test_no_horizontal_overflow(browser, server, done_job, width):
    context = browser.new_context(viewport={"width": width, "height": 844})
    pg = context.new_page()
    watch = Watch(pg)
    try:
        sign_in(pg, server)
        for route, ready in (("#/new", "#recipe-fieldset"), ("#/jobs", "#jobs-table"),
                             (f"#/job/{done_job}", "#plots img[data-plot]")):
            pg.goto(f"{server.url}/{route}")
            pg.wait_for_selector(ready)
            over = pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert over <= 0, (route, width, over)
    finally:
        context.close()
    assert not watch.dialogs and not watch.errors, (watch.dialogs, watch.errors)
