"""Render the handbook's PDF documents from the plain-text sources in scripts/pdf_sources/.

Source format: the first line is `# Title`, `## ` starts a section heading, `- ` a bullet,
`1. ` a numbered step, and blank lines separate paragraphs. Output is deterministic (fixed
creation date; fpdf2 derives the file id from the content), so rebuilding without source
changes leaves the PDFs identical.

Run: .venv/bin/pip install -e 'libs/demo-kb[build]' && .venv/bin/python \
    libs/demo-kb/scripts/build_pdfs.py
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "pdf_sources"
OUT = HERE.parent / "src" / "raftloop_demo_kb" / "data" / "docs"
FIXED_DATE = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
STEP = re.compile(r"^\d+\. ")


def _blocks(body: str) -> list[str]:
    return [block.strip() for block in body.split("\n\n") if block.strip()]


def _render_block(pdf: FPDF, block: str) -> None:
    width = pdf.epw
    if block.startswith("## "):
        pdf.ln(2)
        pdf.set_font("Helvetica", "B", 13)
        pdf.multi_cell(width, 7, block[3:], new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
        return
    pdf.set_font("Helvetica", "", 11)
    for line in block.splitlines():
        if line.startswith("- "):
            line = "* " + line[2:]
        indent = 6 if line.startswith("* ") or STEP.match(line) else 0
        pdf.set_x(pdf.l_margin + indent)
        pdf.multi_cell(width - indent, 5.5, line, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2.5)


def build(source: Path, target: Path) -> None:
    """Render one source file to a PDF at target."""
    title_line, _, body = source.read_text(encoding="ascii").partition("\n")
    title = title_line.removeprefix("# ").strip()
    pdf = FPDF(format="A4")
    pdf.set_title(title)
    pdf.set_author("Vellumbox Support")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 17)
    pdf.multi_cell(pdf.epw, 9, title, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    for block in _blocks(body):
        _render_block(pdf, block)
    pdf.output(str(target))


def main() -> int:
    """Render every source; return a process exit status."""
    sources = sorted(SOURCES.glob("*.txt"))
    for source in sources:
        build(source, OUT / f"{source.stem}.pdf")
    sys.stdout.write(f"rendered {len(sources)} PDFs into {OUT}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
