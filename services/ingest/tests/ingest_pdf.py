"""Hand-written PDFs for the parser's limits: a small file whose one stream inflates a lot."""

from __future__ import annotations

import zlib

LINE = b"BT /F1 12 Tf 72 720 Td (All work and no play) Tj ET\n"
FONT = b"<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >>"


def pdf_bomb(inflated: int, pages: int = 1) -> bytes:
    """A valid PDF whose pages share one Flate content stream of `inflated` bytes of text ops.

    Deflate packs the repeated line about 340 to one: 74 MB of page content fit in 216 KB, the
    kind of file that stalled ingest's event loop for 40 s (issue #18).
    """
    content = zlib.compress(LINE * (inflated // len(LINE)), 9)
    kids = b" ".join(b"%d 0 R" % (4 + i) for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(content), content),
    ]
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R /Resources %s >>"
    objects += [page % FONT] * pages
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
