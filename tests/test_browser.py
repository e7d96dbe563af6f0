"""The page in a real browser: upload, KaTeX rendering, attention, errors.

Needs Debian's Chromium at /usr/bin/chromium and the playwright package (its
own browser download is not used); skipped otherwise. Screenshots go to
$TEST_ARTIFACTS_DIR if set, else the test's tmp_path.
"""

from __future__ import annotations

import base64
import os
import pathlib

import pytest

from conftest_serve import encode, formula_image, running_server
from im2latex_jax.serve import app as app_lib
from im2latex_jax.serve import fake

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"no Chromium at {CHROMIUM}"),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser():
  with sync_api.sync_playwright() as p:
    b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture
def artifacts(tmp_path) -> pathlib.Path:
  d = os.environ.get("TEST_ARTIFACTS_DIR")
  path = pathlib.Path(d) if d else tmp_path
  path.mkdir(parents=True, exist_ok=True)
  return path


@pytest.fixture
def page(browser):
  context = browser.new_context(viewport={"width": 1280, "height": 800})
  pg = context.new_page()
  requests = []
  # Everything must come from our server: record every URL the page asks for.
  pg.on("request", lambda r: requests.append(r.url))
  errors = []
  pg.on("pageerror", lambda e: errors.append(str(e)))
  pg.requests, pg.js_errors = requests, errors
  yield pg
  context.close()


def test_upload_renders_formula(page, tmp_path, artifacts):
  img = tmp_path / "formula.png"
  img.write_bytes(encode(formula_image("L", (320, 100))))
  app = app_lib.create_app(fake.FakePredictor)
  with running_server(app) as url:
    page.goto(url + "/")
    page.select_option("#beam", "3")
    page.set_input_files("#file", str(img))
    page.wait_for_selector("#rendered .katex", timeout=15_000)
    # The editable box holds idiomatic LaTeX; the Copy button copies it.
    assert page.input_value("#latex") == "\\frac{a}{b}"
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("#copy")
    assert page.evaluate("navigator.clipboard.readText()") == "\\frac{a}{b}"
    # KaTeX rendered a fraction, from its own woff2 fonts.
    assert page.locator("#rendered .mfrac").count() == 1
    page.wait_for_function("document.fonts.check('16px KaTeX_Main')")
    # One chip per token, the low-confidence ones marked.
    chips = page.locator("#tokens .chip")
    assert chips.count() == len(fake.FAKE_TOKENS)
    assert page.locator("#tokens .chip-low").count() == sum(
        p < 0.7 for p in fake.FAKE_PROBS)
    assert "beam 3" in page.text_content("#timing")
    assert " ms" in page.text_content("#timing")

    # Hovering a token overlays its attention: the canvas turns red there.
    def red_pixels():
      return page.evaluate("""() => {
        const c = document.getElementById('attn-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] - d[i + 1] > 60) n++;
        return n;
      }""")
    assert red_pixels() == 0
    chips.nth(2).hover()
    assert red_pixels() > 50
    page.screenshot(path=str(artifacts / "serve_page.png"), full_page=True)

    # Editing the LaTeX re-renders it.
    page.fill("#latex", "x^{2} + \\sqrt{y}")
    page.wait_for_selector("#rendered .sqrt")
    assert page.locator("#rendered .mfrac").count() == 0

    # User text is never HTML, and \href etc. are not trusted.
    page.fill("#latex", "<img src=x onerror=alert(1)> \\href{javascript:alert(1)}{x}")
    page.wait_for_timeout(200)
    assert page.locator("#rendered img").count() == 0
    assert page.locator("#rendered a").count() == 0

    page.click("#theme-toggle")
    assert page.get_attribute("html", "data-bs-theme") == "dark"
    page.screenshot(path=str(artifacts / "serve_page_dark.png"), full_page=True)

  assert not page.js_errors
  assert all(r.startswith((url, "data:", "blob:")) for r in page.requests), [
      r for r in page.requests if not r.startswith((url, "data:", "blob:"))]


# Builds a File from base64 PNG bytes and delivers it as a drop or a paste.
_DELIVER_JS = """([b64, how]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], "f.png", {type: "image/png"}));
  if (how === "drop") {
    document.getElementById("dropzone").dispatchEvent(
        new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
  } else {
    document.dispatchEvent(
        new ClipboardEvent("paste", {clipboardData: dt, bubbles: true, cancelable: true}));
  }
}"""


@pytest.mark.parametrize("how", ["drop", "paste"])
def test_drop_and_paste(page, how):
  b64 = base64.b64encode(encode(formula_image())).decode()
  with running_server(app_lib.create_app(fake.FakePredictor)) as url:
    page.goto(url + "/")
    page.evaluate(_DELIVER_JS, [b64, how])
    page.wait_for_selector("#rendered .katex", timeout=15_000)
    assert page.input_value("#latex") == "\\frac{a}{b}"
  assert not page.js_errors


def test_error_shown_on_page(page, tmp_path, artifacts):
  bad = tmp_path / "blank.png"
  bad.write_bytes(encode(formula_image("L").point(lambda _: 255)))
  app = app_lib.create_app(fake.FakePredictor)
  with running_server(app) as url:
    page.goto(url + "/")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not(.d-none)")
    assert "blank" in page.text_content("#error")
    page.screenshot(path=str(artifacts / "serve_page_error.png"))


def test_no_model_page(page, artifacts):
  def factory():
    raise app_lib.NoModelError("no workdir given and no shipped model")

  with running_server(app_lib.create_app(factory)) as url:
    page.goto(url + "/")
    assert "no shipped model" in page.text_content("#no-model")
    assert page.is_disabled("#file")
    page.screenshot(path=str(artifacts / "serve_page_no_model.png"))
