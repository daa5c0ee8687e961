"""The committed PDFs are what scripts/build_pdfs.py renders from scripts/pdf_sources."""

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import raftloop_demo_kb as kb

SOURCES = Path(__file__).resolve().parents[2] / "scripts" / "pdf_sources"


def test_every_pdf_has_a_source_and_every_source_a_pdf() -> None:
    pdfs = {doc.path.stem for doc in kb.documents() if doc.format == "pdf"}
    sources = {path.stem for path in SOURCES.glob("*.txt")}
    assert pdfs == sources


def test_pdf_text_matches_its_source() -> None:
    for source in SOURCES.glob("*.txt"):
        text = kb.document_text(f"{source.stem}.pdf")
        lines = source.read_text(encoding="ascii").splitlines()
        for line in lines:
            plain = line.removeprefix("# ").removeprefix("## ").removeprefix("- ").strip()
            assert " ".join(plain.split()) in text, (source.name, line)


def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    pytest.importorskip(
        "fpdf", reason="fpdf2 is the build extra: pip install -e 'libs/demo-kb[build]'"
    )
    build_pdfs = _load_script()
    for source in SOURCES.glob("*.txt"):
        target = tmp_path / f"{source.stem}.pdf"
        build_pdfs.build(source, target)
        assert target.read_bytes() == kb.document(target.name).path.read_bytes(), source.name


def _load_script() -> ModuleType:
    path = SOURCES.parent / "build_pdfs.py"
    spec = importlib.util.spec_from_file_location("build_pdfs", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
