"""`ssmbench report --format html`: markdown text and figures -> one self-contained page (no
scripts, no external files).

``page(text, figures)`` renders the markdown (markdown-it, tables enabled) under a small
stylesheet and puts each figure, inline SVG, where the text carries its ``figure_marker``. The
page opens from disk in any browser and can be mailed or attached to a CI run as it is. This
module is a converter only: ssmbench.report writes the text and draws the figures.
"""

from __future__ import annotations

import html as _html
import re
from collections.abc import Sequence

from markdown_it import MarkdownIt

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1300px;
       color: #1b1f24; padding: 0 1em; }
h1, h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 12px; max-width: 100%; }
th, td { border: 1px solid #d0d7de; padding: 3px 6px; text-align: right; overflow-wrap: anywhere; }
details { margin: .4em 0 1.2em; }
summary { cursor: pointer; color: #0969da; }
th { background: #f6f8fa; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fbfbfc; }
figure { margin: .5em .5% 1em 0; display: inline-block; vertical-align: top; max-width: 49%; }  /* two plots a row */
figure svg { max-width: 100%; height: auto; }
code { background: #f6f8fa; padding: 0 .25em; border-radius: 3px; }
"""


def figure_marker(i: int) -> str:
    """The paragraph that stands in the markdown text for figure i until ``page`` puts it there."""
    return f"SSMBENCHFIGURE{i}"


def page(text: str, figures: Sequence[tuple[str, str]] = ()) -> str:
    """The page of markdown ``text`` whose ``figure_marker(i)`` paragraphs stand for
    ``figures[i]``, each a (name, inline SVG) pair: the name is the figure's id on the page."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    # the report's folds (ssmbench.report.folded), escaped by markdown-it as all raw HTML is, made real
    body = re.sub(r"<p>&lt;details&gt;&lt;summary&gt;(.*?)&lt;/summary&gt;</p>", r"<details><summary>\1</summary>", body)
    body = body.replace("<p>&lt;/details&gt;</p>", "</details>")
    for i, (name, svg) in enumerate(figures):
        body = body.replace(f"<p>{figure_marker(i)}</p>", f'<figure id="{_html.escape(name)}">{svg}</figure>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>ssmbench report</title><style>{CSS}</style></head>\n<body>\n{body}</body></html>\n"
    )
