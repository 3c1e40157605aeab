"""Small helpers for self-contained HTML pages: base64 PNG embedding, tables, Markdown tables.

Shared by the evaluation report (:mod:`miso_mapper.evaluate.report`) and the run report
(:mod:`miso_mapper.report.run_report`), which is why it belongs to neither package. Nothing here references an
external resource.
"""

from __future__ import annotations

import base64
import html
import io
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: Inline script of every page: records ``window.onerror`` messages into the hidden ``#js-errors`` element and
#: sets ``document.body.dataset.ready = "1"`` on load, so a headless browser's ``--dump-dom`` shows both.
READY_SCRIPT = """<script>
window.__jsErrors = [];
window.onerror = function (msg, src, line) {
  window.__jsErrors.push(String(msg) + " (line " + line + ")");
  var el = document.getElementById("js-errors");
  if (el) { el.textContent = window.__jsErrors.join("\\n"); }
};
window.addEventListener("load", function () {
  var el = document.getElementById("js-errors");
  if (el) { el.textContent = window.__jsErrors.join("\\n"); }
  document.body.dataset.ready = "1";
});
</script>"""

#: The element the script above writes errors into (empty when the page has none).
ERROR_ELEMENT = '<pre id="js-errors" hidden></pre>'


def figure_png(fig: Any, dpi: int = 90) -> bytes:
    """A matplotlib figure as PNG bytes (tight bounding box); the figure is closed if pyplot manages it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)
    return buf.getvalue()


def png_img(png: bytes | Path, alt: str = "plot", css_class: str | None = None) -> str:
    """An ``<img>`` element embedding PNG bytes (or a PNG file's bytes) as a base64 data URI."""
    data = Path(png).read_bytes() if isinstance(png, Path) else png
    cls = f' class="{html.escape(css_class)}"' if css_class else ""
    return f'<img alt="{html.escape(alt)}"{cls} src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def figure_img(fig: Any, alt: str = "plot", dpi: int = 90) -> str:
    """A matplotlib figure as an embedded ``<img>`` (see :func:`figure_png`)."""
    return png_img(figure_png(fig, dpi=dpi), alt)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], css_class: str | None = None) -> str:
    """An HTML table; every cell is escaped (pass numbers already formatted)."""
    cls = f' class="{html.escape(css_class)}"' if css_class else ""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{cls}><tr>{head}</tr>{body}</table>"


def markdown_tables(text: str) -> str:
    """The pipe tables and ``#`` headings of a Markdown text as HTML (other lines are kept as paragraphs).

    Enough for the tables ``miso-mapper evaluate`` writes (``table1_permafrost.md``); not a Markdown parser.
    """
    out: list[str] = []
    block: list[list[str]] = []

    def flush() -> None:
        if block:
            header, *body = block
            out.append(table(header, body))
            block.clear()

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            cells = [c.strip() for c in s[1:-1].split("|")]
            if all(set(c) <= set("-: ") and c for c in cells):  # the |---|---| separator row
                continue
            block.append(cells)
            continue
        flush()
        if s.startswith("#"):
            level = min(len(s) - len(s.lstrip("#")), 6)
            out.append(f"<h{level}>{html.escape(s.lstrip('#').strip())}</h{level}>")
        elif s:
            out.append(f"<p>{html.escape(s)}</p>")
    flush()
    return "\n".join(out)
