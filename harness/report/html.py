"""HTML building blocks for ``report.html``: escaped cells, sortable tables, embedded plots, page.

Everything that is not produced by this module is escaped (``html.escape``): model output,
error messages, arm and run names. A :class:`Safe` string is HTML built here and is
inserted as is. The page is self-contained: CSS and a few lines of JS inline, plots embedded
as base64 PNG (the SVG files sit next to the report).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

from harness.report.plots import PlotRef


class Safe(str):
    """HTML produced by this module (not escaped again)."""


def esc(x: Any) -> Safe:
    return x if isinstance(x, Safe) else Safe(html.escape("" if x is None else str(x)))


def table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], *, sortable: bool = True) -> Safe:
    cls = ' class="sortable"' if sortable else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return Safe(f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def p(text: Any) -> Safe:
    return Safe(f"<p>{esc(text)}</p>")


def pre(text: Any) -> Safe:
    return Safe(f"<pre>{esc(text)}</pre>")


def ul(items: Iterable[Any]) -> Safe:
    return Safe("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")


def figure(plot: PlotRef | None) -> Safe:
    if plot is None:
        return Safe("")
    b64 = base64.b64encode(plot.png_bytes).decode("ascii")
    return Safe(
        f'<figure><img alt="{esc(plot.title)}" src="data:image/png;base64,{b64}">'
        f'<figcaption>{esc(plot.title)} (<a href="plots/{esc(plot.name)}.svg">SVG</a>)'
        "</figcaption></figure>"
    )


def section(key: str, title: str, parts: Iterable[Any]) -> Safe:
    inner = "".join(esc(x) for x in parts)
    return Safe(f'<section id="{esc(key)}"><h2>{esc(title)}</h2>{inner}</section>')


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:72rem;
padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4;cursor:pointer;user-select:none}td:first-child,th:first-child{text-align:left}
tbody tr:nth-child(even){background:#fafafa}
figure{margin:1rem 0}img{max-width:100%;border:1px solid #eee}
pre{background:#f6f6f6;padding:.5rem;white-space:pre-wrap;word-break:break-word;max-height:12rem;
overflow:auto;font-size:.82rem}
.meta{color:#555;font-size:.9rem}.warn{color:#a33}nav a{margin-right:.8rem}
"""

_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',
function(){var t=th.closest('table'),b=t.tBodies[0],i=Array.prototype.indexOf.call(th.parentNode.
children,th),asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';var num=function(s){var v=parseFloat(
s.replace(/[,%]/g,''));if(isNaN(v))return null;if(/ ms$/.test(s))v/=1000;return v;};Array.from(b.rows)
.sort(function(x,y){var a=x.cells[i].textContent,c=y.cells[i].textContent,na=num(a),nc=num(c);
var r=(na!==null&&nc!==null)?na-nc:a.localeCompare(c);return asc?r:-r;}).forEach(function(r){
b.appendChild(r);});});});
"""


def page(title: str, header: Sequence[Any], sections: Sequence[tuple[str, str, Safe]]) -> str:
    """A complete HTML document: title, header parts, a nav and the sections (key, title, html)."""
    nav = "".join(f'<a href="#{esc(k)}">{esc(t)}</a>' for k, t, _ in sections)
    body = "".join(h for _, _, h in sections)
    head = "".join(esc(x) for x in header)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>{head}<nav>{nav}</nav>{body}<script>{_JS}</script></body></html>\n"
    )
