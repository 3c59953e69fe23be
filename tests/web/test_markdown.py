"""Answers as markdown: what a model writes is parsed with raw HTML off and cleaned by a sanitiser, so no
element or attribute of its choosing reaches the page; code, lists, tables and plain links survive."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from app.web.markdown import ALLOWED_TAGS, render_markdown, sanitise

SAFE_ATTRIBUTES = {"href", "rel", "start", "title"}


class Elements(HTMLParser):
    """Every element and attribute in a piece of HTML, as a browser's parser would see them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def assert_inert(html: str) -> None:
    for tag, attrs in Elements(html).found:
        assert tag in ALLOWED_TAGS, (tag, html)
        assert set(attrs) <= SAFE_ATTRIBUTES, (attrs, html)
        href = attrs.get("href")
        if href is not None:
            assert href.startswith(("https://", "http://", "mailto:")), html
            assert '"' not in href and " " not in href, html


PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    '<div hx-get="/api/pool" hx-trigger="load">x</div>',
    "<svg onload=alert(3)><circle r=5/></svg>",
    "[click](javascript:alert(4))",
    "[click](JaVaScRiPt:alert(5))",
    "[click](  javascript:alert(6) )",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCg3KTwvc2NyaXB0Pg==)",
    "![pixel](https://tracker.example/p.png)",
    '<a href="javascript:alert(8)">a</a>',
    "<iframe src=/export/ratings.csv></iframe>",
    "<style>body{display:none}</style>",
    "<!-- <script>alert(9)</script> -->",
    "<<script>script>alert(10)<</script>/script>",
    '<p style="position:fixed;inset:0">cover</p>',
    "<form action=/logout method=post><button>go</button></form>",
    '[a](https://ok.example/" onmouseover="alert(11))',
    "`<script>` and ```\n<script>alert(12)</script>\n```",
    "<details open ontoggle=alert(13)>",
    "<math><mi xlink:href=javascript:alert(14)>x</mi></math>",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_payload_makes_an_element_or_attribute_of_its_own(payload: str) -> None:
    assert_inert(str(render_markdown(payload)))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_sanitiser_alone_holds_even_if_the_parser_let_html_through(payload: str) -> None:
    assert_inert(sanitise(payload))


def test_raw_html_is_shown_as_its_text() -> None:
    html = str(render_markdown('<b>bold?</b> <div hx-get="/x">'))
    assert html == "<p>&lt;b&gt;bold?&lt;/b&gt; &lt;div hx-get=&#34;/x&#34;&gt;</p>\n"


def test_code_blocks_keep_their_text_and_layout() -> None:
    html = str(render_markdown("```python\ndef f(x):\n    return x < 1 and '<b>'\n```"))
    assert html == ("<pre><code>def f(x):\n    return x &lt; 1 and &#39;&lt;b&gt;&#39;\n</code></pre>\n")


def test_markdown_structure_survives() -> None:
    html = str(render_markdown("# Title\n\n**bold** *it* ~~gone~~ `code`\n\n- one\n- two\n\n3. three\n\n"
                               "> quoted\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nline one\nline two"))
    for part in ("<h1>Title</h1>", "<strong>bold</strong>", "<em>it</em>", "<s>gone</s>", "<code>code</code>",
                 "<li>one</li>", '<ol start="3">', "<blockquote>", "<td>1</td>", "line one<br>"):
        assert part in html, (part, html)


def test_links_are_absolute_web_links_only_and_never_pass_referrers() -> None:
    html = str(render_markdown("[web](https://example.org/a?b=1) [mail](mailto:a@example.org) [rel](/logout) "
                               "[ftp](ftp://example.org/x)"))
    assert html.count("<a ") == 2 + html.count("<a rel=")  # the relative and ftp links keep no href
    assert 'href="https://example.org/a?b=1"' in html and 'href="mailto:a@example.org"' in html
    assert "/logout" not in html and "ftp:" not in html
    assert html.count('rel="nofollow noopener noreferrer"') == html.count("<a ")


def test_images_are_not_fetched_but_linked() -> None:
    html = str(render_markdown("![a cat](https://example.org/cat.png)"))
    assert "<img" not in html and 'href="https://example.org/cat.png"' in html and ">a cat</a>" in html


def test_empty_and_missing_answers_render_nothing() -> None:
    assert render_markdown("") == "" and render_markdown(None) == ""
