"""HTML to plain article text: WikiSource's rendered pages and the 1810 edition's article HTML."""
from __future__ import annotations

import html
import re


from distill.corpus.paragraphs import HARD_BREAK, paragraphs
from distill.errors import DistillError

# Parts of a rendered WikiSource page that are not article text.
_NOT_BODY = (
    "#headertemplate", ".wst-header", ".ws-header", ".header_notes", "#footertemplate", ".wst-footer",
    ".licenseContainer", ".licenseBanner", ".ws-noexport", ".noprint", ".mw-editsection", "sup.reference",
    ".reference", ".references", ".mw-references-wrap", ".reflist", ".catlinks", ".navbox", ".pagenum",
    ".ws-pagenum", ".wst-pagenum", ".wst-sidenote-outer", ".sidenote", ".mw-empty-elt", "style", "script",
    ".thumb", "figure", "img",
)
_BLOCKS = ("p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "dd", "dt", "table", "center", "pre")


def rendered_html_to_text(page_html: str, source: str) -> str:
    """The article body of a rendered WikiSource page (``action=parse`` or ``/wiki/Title``).

    The body is ``div.mw-parser-output`` without the header (previous/next, volume), footer
    (licence, categories), page numbers, edit links and footnotes. A page without that ``div``
    is not a WikiSource article: :class:`DistillError` names ``source``.
    """
    from bs4 import BeautifulSoup  # heavy (~0.1 s) and only for HTML sources: not on every corpus command's start-up

    soup = BeautifulSoup(page_html, "html.parser")
    root = soup.select_one("div.mw-parser-output")
    if root is None:
        raise DistillError(f"{source}: no div.mw-parser-output in the page HTML, so it is not a rendered WikiSource article; re-scrape it or remove the file")
    for math in root.select(".mwe-math-element"):
        annotation = math.find("annotation")
        math.replace_with(annotation.get_text() if annotation else math.get_text())
    for selector in _NOT_BODY:
        for element in root.select(selector):
            element.decompose()
    for br in root.find_all("br"):
        br.replace_with(HARD_BREAK)
    for cell in root.find_all(["td", "th"]):
        cell.insert_after(" ")
    for block in root.find_all(_BLOCKS):
        block.insert_after("\n\n")
    return paragraphs(root.get_text(""))


# Cross-reference anchors of the 1810 data. Some are malformed (`<a class="</a>xref" href="x">`,
# `<a </a>class="xref" ...>`, a bare `class="xref" href="x">`): dropping every `</a>` first turns
# them all into plain opening tags.
_XREF_OPEN = re.compile(r'(?:<a\s+)?class="xref"\s+href="[^"]*">|<a\b[^<>]*>')
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")


def eb1810_html_to_text(article_html: str) -> str:
    """Text of one 1810 article (``t`` field): anchors and markdown emphasis removed, one line per
    paragraph or list line."""
    text = _XREF_OPEN.sub("", article_html.replace("</a>", ""))
    text = _TAG.sub("", text)
    text = html.unescape(text)
    text = _BOLD.sub(r"\1", text)
    text = _ITALIC.sub(r"\1", text)
    text = text.replace("**", "")
    lines = (re.sub(r"\s+", " ", re.sub(r"^\s*>\s+", "", line)).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)
