"""`ssmbench report --format html`: one self-contained page (no scripts, no external files).

The page is the markdown report rendered to HTML (markdown-it, tables enabled) with its plots
inline as SVG, under a small stylesheet. It opens from disk in any browser and can be mailed or
attached to a CI run as it is.
"""

from __future__ import annotations

import html as _html

from markdown_it import MarkdownIt

from .report import markdown

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1b1f24; padding: 0 1em; }
h1, h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 12px; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fbfbfc; }
figure { margin: .5em 0 1.5em; }
figure svg { max-width: 100%; height: auto; }
code { background: #f6f8fa; padding: 0 .25em; border-radius: 3px; }
"""


def html(records: list[dict], sources: list[str] | None = None) -> str:
    figures: list[str] = []

    def sink(name: str, fig) -> str:
        from .plots import svg

        figures.append(f'<figure id="{_html.escape(name)}">{svg(fig)}</figure>')
        return f"SSMBENCHFIGURE{len(figures) - 1}"

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown(records, sources, sink))
    for i, fig in enumerate(figures):
        body = body.replace(f"<p>SSMBENCHFIGURE{i}</p>", fig)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>ssmbench report</title><style>{CSS}</style></head>\n<body>\n{body}</body></html>\n"
    )
