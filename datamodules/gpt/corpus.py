"""Text corpora for the GPT family, as named documents; the held-out split is by document.

Sources (`data.source`):
  stdlib       the Python standard library's own .py files (code and docstrings), always present
  python_docs  the Python documentation in reST (Debian `python3-doc`)
  austen       Jane Austen's six novels, one document per chapter (Debian `r-cran-janeaustenr`,
               exported once with Rscript into <data_dir>/gpt/austen)
  files        any text files or folders given in `data.paths`
"""

import hashlib
import re
import shutil
import subprocess
import sysconfig
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from datamodules.gpt.settings import Source
from hylab.errors import UserError

SOURCES = get_args(Source)
PYTHON_DOCS_DIR = Path("/usr/share/doc/python3-doc/html/_sources")
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py")
# Folders of the standard library that are tests or third-party code, not the library itself.
STDLIB_SKIP = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
AUSTEN_EXPORT = (
    "library(janeaustenr); b <- austen_books(); "
    "for (name in levels(b$book)) writeLines(as.character(b$text[b$book == name]), "
    "file.path(commandArgs(TRUE)[1], paste0(gsub('[^A-Za-z]+', '_', name), '.txt')))"
)
CHAPTER_HEADING = re.compile(r"^(?:CHAPTER|Chapter) [0-9IVXLC]+\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Document:
    name: str
    text: str


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def stdlib_documents() -> list[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not STDLIB_SKIP & set(p.relative_to(root).parts))
    return [Document(str(p.relative_to(root)), read_text(p)) for p in files]


def python_docs_documents(docs_dir: Path = PYTHON_DOCS_DIR) -> list[Document]:
    if not docs_dir.is_dir():
        raise UserError(
            f"data.source=python_docs: the Python docs in reST are not at {docs_dir}; "
            "install them with `apt-get install python3-doc`, or use data.source=stdlib"
        )
    files = sorted(docs_dir.rglob("*.rst.txt"))
    return [Document(str(p.relative_to(docs_dir)), read_text(p)) for p in files]


def export_austen(target: Path) -> Path:
    """Write the six novels as <target>/<Book>.txt with R's janeaustenr (once; kept after)."""
    if target.is_dir() and len(list(target.glob("*.txt"))) == 6:
        return target
    if shutil.which("Rscript") is None:
        raise UserError(
            "data.source=austen needs R's janeaustenr package and Rscript: install them with "
            "`apt-get install r-cran-janeaustenr`, or use data.source=stdlib"
        )
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    done = subprocess.run(["Rscript", "-e", AUSTEN_EXPORT, str(partial)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or len(list(partial.glob("*.txt"))) != 6:
        raise UserError(
            "data.source=austen: exporting the novels with Rscript failed "
            f"({done.stderr.strip().splitlines()[-1:] or 'no output'}); install `apt-get install r-cran-janeaustenr`"
        )
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def split_chapters(book: str, text: str) -> list[Document]:
    """A novel as one document per chapter; the title page goes with chapter 1."""
    starts = [m.start() for m in CHAPTER_HEADING.finditer(text)][1:]
    bounds = [0, *starts, len(text)]
    return [Document(f"{book}/{i + 1:03d}", text[a:b]) for i, (a, b) in enumerate(zip(bounds, bounds[1:])) if text[a:b].strip()]


def austen_documents(data_dir: Path) -> list[Document]:
    folder = export_austen(Path(data_dir) / "gpt" / "austen")
    return [doc for path in sorted(folder.glob("*.txt")) for doc in split_chapters(path.stem, read_text(path))]


def file_documents(paths: Sequence[str]) -> list[Document]:
    if not paths:
        raise UserError("data.source=files needs data.paths=[file_or_folder, ...]")
    documents = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_file():
            documents.append(Document(str(path), read_text(path)))
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(TEXT_SUFFIXES))
            documents += [Document(str(p), read_text(p)) for p in found]
        else:
            raise UserError(f"data.paths: {given} does not exist (give text files or folders of {', '.join(TEXT_SUFFIXES)} files)")
    if not documents:
        raise UserError(f"data.paths={list(paths)} holds no text files ({', '.join(TEXT_SUFFIXES)})")
    return documents


def load_documents(source: str, data_dir: str | Path, paths: Sequence[str] = ()) -> list[Document]:
    if source == "stdlib":
        return stdlib_documents()
    if source == "python_docs":
        return python_docs_documents()
    if source == "austen":
        return austen_documents(Path(data_dir))
    if source == "files":
        return file_documents(paths)
    raise UserError(f"data.source={source!r} is not a corpus; choose one of: {', '.join(SOURCES)}")


def stable_order(documents: Iterable[Document]) -> list[Document]:
    """Documents in an order fixed by their names alone (a hash), so a split never depends on
    file-system order and adding a document does not move the others between splits."""
    return sorted(documents, key=lambda d: (zlib.crc32(d.name.encode()), d.name))


def split_documents(documents: list[Document], val_fraction: float, max_bytes: int | None = None) -> tuple[list[Document], list[Document]]:
    """(train, val): whole documents, val the first round(val_fraction * n) (at least 1) in stable order.
    `max_bytes` keeps a deterministic subset of about that many bytes (for quick runs)."""
    ordered = [d for d in stable_order(documents) if d.text.strip()]
    if max_bytes:
        kept, total = [], 0
        for doc in ordered:
            if total >= max_bytes:
                break
            kept.append(doc)
            total += len(doc.text.encode("utf-8"))
        ordered = kept
    if len(ordered) < 2:
        raise UserError(f"the corpus has {len(ordered)} non-empty document(s): a train/val split by document needs at least 2")
    held = min(len(ordered) - 1, max(1, round(val_fraction * len(ordered))))
    return ordered[held:], ordered[:held]


def fingerprint(documents: Iterable[Document]) -> str:
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(doc.name.encode())
        digest.update(b"\0")
        digest.update(doc.text.encode("utf-8", errors="replace"))
        digest.update(b"\1")
    return digest.hexdigest()[:16]
