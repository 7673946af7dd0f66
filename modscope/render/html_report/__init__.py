"""The interactive HTML report: one self-contained file (no network at view time) drawn from a ``ModelPage``.

``page.py`` fills ``template.html`` with ``report.css``, ``report.js`` (plain, written here, no third-party
code), the graph as inline SVG (``svg.py``) and the data (``data.py``): the JSON documents of the reports, each
the same as its command's ``--json``, plus what the script needs to draw the tree. ``render/views.py``
registers ``page_html``/``write_page`` as the ``page``/``page_file`` presentations of ``ModelPage``.
"""
from modscope.render.html_report.page import page_html, write_page

__all__ = ["page_html", "write_page"]
