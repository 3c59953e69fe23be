"""Layout and accessibility in Chromium (issue 14, items 6 and 10), on a picker as long as the real one (the
repository's catalogue beside the tiny models): the header keeps its height as chips appear, panel titles
never break inside a word, Compare is on screen without scrolling, a phone is scrolled to the results; every
text meets WCAG AA contrast (4.5:1, 3:1 when large) and the stars 3:1, in the light and the dark theme;
Ctrl+Enter (Cmd+Enter) in the prompt compares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import ARTIFACTS, CATALOGUE, LiveServer, png_bytes
from tests.web.test_browser import browser, wait_until_finished, watch_problems, with_csp  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
FOUR = ["tiny-qwen2-vl", "tiny-idefics3", "tiny-paligemma", "tiny-llava"]


@pytest.fixture(scope="module")
def layout_server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tiny = yaml.safe_load((tiny_dir / "models.yaml").read_text())
    for entry in tiny["models"]:
        entry["repo"] = str(tiny_dir / entry["repo"][2:])
    real = yaml.safe_load(CATALOGUE.read_text())
    catalog = {**real, "models": tiny["models"] + real["models"]}
    folder = tmp_path_factory.mktemp("layout")
    (folder / "models.yaml").write_text(yaml.safe_dump(catalog))
    live = LiveServer(folder / "models.yaml", folder / "data", budget_gb=1.2)
    yield live
    live.stop()


@pytest.fixture
def opened(browser, layout_server: LiveServer):  # noqa: F811
    """open(viewport, dark=False) → a page on the server; script errors fail the test at the end."""
    contexts, problems = [], []

    def open_one(viewport: dict, dark: bool = False):
        context = browser.new_context(base_url=layout_server.url, viewport=viewport,
                                      color_scheme="dark" if dark else "light")
        context.route("**/*", with_csp)
        contexts.append(context)
        page = context.new_page()
        problems.append(watch_problems(page))
        return page

    yield open_one
    for context in contexts:
        context.close()
    assert all(found == [] for found in problems), problems


def fill_form(page, models: list[str], prompt: str = "What colour is it?", tokens: int = 6) -> None:
    teal = {"name": "teal.png", "mimeType": "image/png", "buffer": png_bytes((20, 150, 140))}
    page.set_input_files("#images", [teal])
    page.locator("#thumbs .thumb-item.is-ok").wait_for()
    page.fill("#prompt", prompt)
    for model in models:
        page.check(f"input[name=models][value='{model}']")
    page.fill("input[name=max_new_tokens]", str(tokens))


def in_viewport(page, selector: str) -> bool:
    return page.evaluate("""s => { const r = document.querySelector(s).getBoundingClientRect();
                                   return r.top >= 0 && r.bottom <= innerHeight && r.height > 0; }""", selector)


# Words of every panel title that a line break cuts in two (a Range over each word with more than one box).
BROKEN_WORDS = """() => {
    const broken = [];
    for (const title of document.querySelectorAll('.panel-name')) {
        const walker = document.createTreeWalker(title, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            for (const match of node.data.matchAll(/\\S+/g)) {
                const range = document.createRange();
                range.setStart(node, match.index);
                range.setEnd(node, match.index + match[0].length);
                const lines = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
                if (lines.size > 1) { broken.push(match[0]); }
            }
        }
    }
    return broken;
}"""


# Header items that stick out of the screen or overlap another (the chips scroll inside their own strip).
HEADER_CLASHES = """() => {
    const items = [...document.querySelectorAll('header.top .brand, header.top .links a, header.top .pool-sum,'
                                               + ' header.top #rater, header.top .resident')];
    const boxes = items.map(el => [el.textContent.trim().slice(0, 20) || el.id, el.getBoundingClientRect()]);
    const out = [];
    for (const [name, box] of boxes) {
        if (box.left < 0 || box.right > innerWidth + 0.5) { out.push(name + ' sticks out'); }
    }
    for (let i = 0; i < boxes.length; i++) { for (let j = i + 1; j < boxes.length; j++) {
        const [a, p] = boxes[i], [b, q] = boxes[j];
        if (p.left < q.right - 0.5 && q.left < p.right - 0.5 && p.top < q.bottom - 0.5 && q.top < p.bottom - 0.5) {
            out.push(a + ' overlaps ' + b);
        }
    } }
    const pool = document.querySelector('#pool').getBoundingClientRect();
    const sum = document.querySelector('#pool .pool-sum').getBoundingClientRect();
    if (sum.right > pool.right + 0.5) { out.push('the pool summary is cut off'); }
    return out;
}"""


def test_the_header_keeps_its_height_and_compare_is_in_reach(opened) -> None:
    for viewport in (DESKTOP, PHONE):
        page = opened(viewport)
        page.goto("/")
        assert page.locator(".model").count() >= 20  # the long picker
        assert in_viewport(page, "button.go"), viewport  # Compare on screen without scrolling
        empty = page.locator("header.top").bounding_box()["height"]
        if viewport is DESKTOP:
            assert empty < 56  # one line
        fill_form(page, FOUR if viewport is DESKTOP else FOUR[:2])
        page.click("button.go:not(.battle-go)")
        wait_until_finished(page, 4 if viewport is DESKTOP else 2)
        page.wait_for_function("() => document.querySelectorAll('#pool .resident li').length >= 2")
        assert page.locator("header.top").bounding_box()["height"] == pytest.approx(empty, abs=0.5), viewport
        assert page.evaluate(HEADER_CLASHES) == [], viewport
        assert page.evaluate(BROKEN_WORDS) == [], viewport
        # the folded list names what is chosen, and folding brings Compare right under it
        page.locator("#models-list > summary").click()
        assert "Tiny Qwen2-VL" in page.locator("#models-chosen").inner_text()
        assert page.locator(".model-grid").is_hidden()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"layout-{viewport['width']}.png"), full_page=True)


def test_a_phone_is_scrolled_to_the_results(opened) -> None:
    page = opened(PHONE)
    page.goto("/")
    fill_form(page, ["tiny-qwen2-vl", "tiny-idefics3"])
    assert page.evaluate("document.getElementById('results').getBoundingClientRect().top") > PHONE["height"]
    page.click("button.go:not(.battle-go)")
    page.locator(".panel").first.wait_for()
    # the results' start and the first panel's title are on screen (as high as the page's length allows)
    page.wait_for_function("() => { const t = document.getElementById('results').getBoundingClientRect().top;"
                           " const p = document.querySelector('.panel-name').getBoundingClientRect().bottom;"
                           " return t >= -1 && t < innerHeight / 2 && p < innerHeight; }")
    assert page.evaluate("window.scrollY") > 0
    wait_until_finished(page, 2)
    assert page.evaluate(BROKEN_WORDS) == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "phone-390-results.png"))


def test_ctrl_or_cmd_enter_in_the_prompt_compares(opened) -> None:
    page = opened(DESKTOP)
    for chord in ("Control+Enter", "Meta+Enter"):
        page.goto("/")
        fill_form(page, ["tiny-qwen2-vl"], prompt=f"Sent with {chord}")
        page.locator("#prompt").press(chord)
        page.locator(".prompt-shown", has_text=f"Sent with {chord}").wait_for()
        wait_until_finished(page, 1)
        assert page.locator("#prompt").input_value() == f"Sent with {chord}"  # no newline was typed into it
    page.goto("/")
    page.fill("#prompt", "a plain Enter")
    page.locator("#prompt").press("Enter")  # only adds a line
    page.wait_for_timeout(300)
    assert page.locator(".panel").count() == 0 and page.locator("#prompt").input_value() == "a plain Enter\n"


# Every visible text's colour against the background it is drawn on (semi-transparent layers composited), and
# each star's. Disabled controls are exempt in WCAG; so is text under an opacity below 1 (only disabled here).
CONTRASTS = """() => {
    const parse = c => { const m = c.match(/[\\d.]+/g).map(Number);
                         return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
    const over = (top, base) => [0, 1, 2].map(i => top[i] * top[3] + base[i] * (1 - top[3])).concat(1);
    const lum = c => { const f = v => { v /= 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                       return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
    const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
    const background = el => {
        const layers = [];
        for (let e = el; e; e = e.parentElement) {
            const c = parse(getComputedStyle(e).backgroundColor);
            if (c[3] > 0) { layers.push(c); }
            if (c[3] >= 1) { break; }
        }
        let color = [255, 255, 255, 1];
        for (const layer of layers.reverse()) { color = over(layer, color); }
        return color;
    };
    const faded = el => { for (let e = el; e; e = e.parentElement) {
        if (Number(getComputedStyle(e).opacity) < 1) { return true; } } return false; };
    const shown = el => el.getClientRects().length > 0 && getComputedStyle(el).visibility === 'visible' &&
                        !el.closest('.visually-hidden, dialog:not([open]), [hidden]');
    const out = [];
    for (const el of document.querySelectorAll('body *')) {
        const own = [...el.childNodes].some(n => n.nodeType === 3 && n.data.trim());
        const star = el.classList.contains('star');
        if ((!own && !star) || !shown(el) || faded(el) || el.closest('.disabled, :disabled')) { continue; }
        const style = getComputedStyle(el);
        const bg = background(el);
        const fg = over(parse(style.color), bg);
        const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
        const large = size >= 24 || (size >= 18.66 && bold);
        out.push({what: star ? 'star ' + (el.textContent || '') : (el.className || el.tagName) + ': ' +
                  el.textContent.trim().slice(0, 30), ratio: Math.round(ratio(fg, bg) * 100) / 100,
                  need: star || large ? 3 : 4.5, star: star,
                  filled: star && getComputedStyle(el, '::before').content.includes('\\u2605')});
    }
    return out;
}"""


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_text_and_stars_meet_wcag_aa_contrast(opened, dark: bool) -> None:
    page = opened(DESKTOP, dark=dark)
    page.goto("/")
    assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") is dark
    fill_form(page, ["tiny-qwen2-vl", "tiny-idefics3"])
    page.click("button.go:not(.battle-go)")
    wait_until_finished(page, 2)
    panel = page.locator(".panel").first
    output_id = panel.get_attribute("data-output")
    panel.locator(f"label[for='score-{output_id}-3']").click()
    panel.locator(".rating-status.is-saved").wait_for()
    page.mouse.move(0, 0)  # no hover preview on the stars
    page.locator(".panel").nth(1).locator("textarea.note").fill("typed, not stored yet")  # the warning colour too
    measured = page.evaluate(CONTRASTS)
    failing = [m for m in measured if m["ratio"] < m["need"]]
    assert failing == [], failing
    stars = [m for m in measured if m["star"]]
    assert {m["filled"] for m in stars} == {True, False}  # both kinds were measured
    assert page.locator(".st-done").count() == 2 and any(m["what"].startswith("st st-done") for m in measured)
    print("lowest text:", min((m for m in measured if not m["star"]), key=lambda m: m["ratio"] / m["need"]),
          "lowest star:", min(stars, key=lambda m: m["ratio"]),
          "done:", next(m for m in measured if m["what"].startswith("st st-done")))
    if dark:
        background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
        assert background == "rgb(18, 21, 28)"  # the dark theme, not the light one
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dark-mode.png"), full_page=True)
