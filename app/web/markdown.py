"""A model's answer as safe HTML: markdown parsed by markdown-it-py, then cleaned by nh3.

The answer is untrusted text. Two independent layers keep its HTML off the page:
- the parser runs with raw HTML off (`<script>` in an answer is parsed as the text "<script>") and
  without images (an image would make the reader's browser fetch a URL the model chose);
- whatever the parser produced is then cleaned by a sanitiser with a short allow-list of tags, no
  attributes but a link's `href` (absolute http, https or mailto only) and a table cell's alignment,
  and `rel="nofollow noopener noreferrer"` on every link.
The stored record stays the raw text; this is only how the page shows it.
"""

from __future__ import annotations

import functools
import re

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

ALLOWED_TAGS = frozenset({
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
})
ALLOWED_ATTRIBUTES = {"a": {"href"}, "ol": {"start"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "nofollow noopener noreferrer"

_parser = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False, "breaks": True})
_parser.enable(["table", "strikethrough"]).disable("image")


def sanitise(html: str) -> str:
    """Any HTML reduced to the allow-list: other tags dropped (script, style and their like with their
    content), every attribute but the allowed ones removed, links only to absolute http(s)/mailto URLs."""
    return nh3.clean(html, tags=set(ALLOWED_TAGS), attributes={k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()},
                     url_schemes=set(URL_SCHEMES), link_rel=LINK_REL, strip_comments=True,
                     clean_content_tags={"script", "style", "template", "iframe", "object", "noscript", "title",
                                         "textarea", "xmp", "noembed", "noframes", "svg", "math"},
                     url_relative="deny")


_TAG = re.compile(r"(<[^>]*>)")


def _quotes_escaped(html: str) -> str:
    """Quotes in text escaped as the templates escape them (`"` → &#34;, `'` → &#39;), so that text which
    looks like markup reads as such nowhere, not even to a scanner of the page's source. Tags are left as
    they are: in the sanitiser's output no attribute value holds a `>` (links come percent-encoded)."""
    parts = _TAG.split(html)
    return "".join(part if index % 2 else part.replace('"', "&#34;").replace("'", "&#39;")
                   for index, part in enumerate(parts))


@functools.lru_cache(maxsize=512)
def _rendered(text: str) -> str:
    return _quotes_escaped(sanitise(_parser.render(text)))


def render_markdown(text: str | None) -> Markup:
    """A model's answer as markdown, rendered and sanitised; safe to put in a template as it is."""
    if not text:
        return Markup("")
    return Markup(_rendered(text))  # noqa: S704 (sanitised above: this is the one place that marks it safe)
