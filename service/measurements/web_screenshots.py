"""Screenshots of the web page (docs/img/web-*.png) from a real server and a real ranking job.

    python -m ncap.service.measurements.web_screenshots [--out docs/img] [--timeout 900]

Starts ``ncap serve`` on 127.0.0.1 (``ncap.service.measurements.live_server.LiveServer``, the real ranking function) and drives
the distribution's Chromium with Playwright for Python (the browser the page's tests use) at 1280x800:

    web-signin.png        the sign-in form
    web-new-ranking.png   the new-ranking form: the embedded digits data, two small random-init candidates,
                          2 epochs at 32 px (the recipe form below is generated from the server's schema)
    web-job-running.png   that job while it trains (progress mid-way)
    web-job-done.png      the finished job: the ranking table and the plots

The job trains for real (CPU: about a minute when the machine is otherwise idle).
"""
from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ncap.service.measurements.live_server import ROOT, LiveServer

CANDIDATES = "mobilenetv3_small_050=random, resnet10t=random"
RECIPE = {"epochs": "2", "image_size": "32"}
VIEWPORT = {"width": 1280, "height": 800}
SHOTS = ("web-signin.png", "web-new-ranking.png", "web-job-running.png", "web-job-done.png")


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise SystemExit("no chromium on PATH (Debian: apt-get install chromium)")
    return exe


def _sign_in_and_fill(page, url: str, token: str, shot) -> None:
    """Screenshots 1 and 2: the sign-in page, then the new-ranking form filled in."""
    page.goto(f"{url}/#/new")
    page.wait_for_selector("#token")
    shot("web-signin.png")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#recipe-fieldset")
    page.select_option("#dataset-name", "digits")
    page.fill("#candidate-custom", CANDIDATES)
    page.press("#candidate-custom", "Enter")
    for name, value in RECIPE.items():
        page.fill(f"#field-{name}", value)
    page.evaluate("window.scrollTo(0, 0)")
    page.focus("#candidate-search")
    shot("web-new-ranking.png")


def _follow_job(page, timeout: float, shot) -> None:
    """Screenshots 3 and 4: submit, the job mid-way through training, then its ranking table and plots."""
    page.click("#submit-job")
    page.wait_for_url("**/#/job/*")
    deadline = time.time() + timeout
    while time.time() < deadline:  # until a candidate is mid-way through its epochs
        fraction = page.evaluate("(document.querySelector('#overall-progress') || {}).value || 0")
        if 0.3 <= fraction < 0.9 or page.is_visible("#ranking-table"):
            break
        time.sleep(0.25)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    shot("web-job-running.png")
    page.wait_for_selector("#ranking-table", timeout=timeout * 1000)
    page.wait_for_function(
        "(() => { const imgs = [...document.querySelectorAll('#plots img')];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); })()",
        timeout=60_000)
    page.evaluate("document.querySelector('#ranking-title').closest('section').scrollIntoView()")
    page.evaluate("window.scrollBy(0, -12)")
    shot("web-job-done.png")


def take(out: Path, timeout: float = 900.0, log=print) -> list[Path]:
    """Run the server, the job and the browser; write the four screenshots into ``out``; return their paths."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="ncap-web-shots-") as tmp:
        server = LiveServer(Path(tmp), token=token)
        server.start()
        log(f"server at {server.url}")
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-dev-shm-usage"])
                page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
                page.set_default_timeout(60_000)

                def shot(name: str, **kw) -> None:
                    path = out / name
                    page.screenshot(path=str(path), **kw)
                    written.append(path)
                    log(f"wrote {path}")

                _sign_in_and_fill(page, server.url, token, shot)
                _follow_job(page, timeout, shot)
                browser.close()
        except Exception:
            log(server.log())
            raise
        finally:
            server.stop()
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ncap.service.measurements.web_screenshots", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder for the PNGs [docs/img]")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the job [900]")
    args = ap.parse_args(argv)
    t0 = time.time()
    paths = take(args.out, timeout=args.timeout)
    print(f"{len(paths)} screenshots in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0 if len(paths) == len(SHOTS) else 1


if __name__ == "__main__":
    raise SystemExit(main())
