"""Self-contained HTML pages of plotly figures: plotly.js inlined once (opens offline), every figure
follows the page width (responsive config, no fixed width, re-fitted when its box changes size), and
the page reads on a phone (viewport meta, max-width 100%). No other viz module is imported here."""

import html
from typing import Any

CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222;"
       "line-height:1.4}*{box-sizing:border-box}table{border-collapse:collapse;font-size:0.92em}"
       "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}h2{margin-top:1.6em}"
       ".plotly-graph-div,.fig,img,svg{max-width:100%}.fig{width:100%;overflow:hidden}"
       ".scroll{overflow-x:auto;max-width:100%}")


RESIZE_JS = ("<script>(function(){if(!window.Plotly||!window.ResizeObserver)return;"
             "var ro=new ResizeObserver(function(es){es.forEach(function(e){Plotly.Plots.resize(e.target);});});"
             "document.querySelectorAll('.plotly-graph-div').forEach(function(g){ro.observe(g);});})();</script>")
"""Re-fit every figure when its box changes size (a scrollbar appearing, a rotated phone)."""


def fig_div(fig: Any, first: bool) -> str:
    """A figure as an HTML div that follows the page width (plotly.js inlined with the first figure)."""
    return fig.to_html(full_html=False, include_plotlyjs=bool(first), config={"responsive": True, "displaylogo": False},
                       default_width="100%")


def html_report(title: str, sections: list[tuple[str, Any]], summary_rows: list[tuple[str, str]] | None = None,
                intro_html: str = "") -> str:
    """Assemble an HTML page from (heading, figure-or-html-string) sections; ``intro_html`` goes right
    under the title, before the summary rows and any figure. Figures follow the page width."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>", intro_html]
    if summary_rows:
        parts.append("<div class='scroll'><table>" + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary_rows) + "</table></div>")
    first = True
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(body, str):
            parts.append(body)
        else:
            parts.append(f"<div class='fig'>{fig_div(body, first)}</div>")
            first = False
    parts.append(RESIZE_JS + "</body></html>")
    return "\n".join(parts)
