"""The map is true: every path docs/architecture.md names exists, every family has the anatomy it
describes, the docs and README cite only files that exist, and every family package's docstring
names each of its modules."""

import ast
import itertools
import re

import pytest

from tests.helpers import ROOT

FAMILIES = ["image", "har", "ris", "gpt", "hybrid"]
TOP = ("lightning_modules/", "datamodules/", "callbacks/", "hylab/", "bench/", "docs/", "conf/", "tests/",
       "hydra_plugins/", "scripts/")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# What a command writes when it runs (bench/gpu.py's table and logs), not files of the repository.
WRITTEN = {"docs/gpu.json", "bench/out/gpu/"}


def cited_paths(text: str) -> set[str]:
    """Repository paths in `code spans`, with {a,b} alternatives expanded; templates (<f>) left out."""
    found = set()
    for span in re.findall(r"`([^`\n]+)`", text):
        for token in span.split():
            token = token.strip("(),.:;'\"")
            if token.startswith(TOP) and "<" not in token and token not in WRITTEN:
                found.update(expand(token))
    return found


def expand(path: str) -> list[str]:
    parts = re.split(r"\{([^{}]*)\}", path)
    options = [part.split(",") if i % 2 else [part] for i, part in enumerate(parts)]
    return ["".join(choice) for choice in itertools.product(*options)]


def exists(path: str) -> bool:
    if "::" in path:  # a test by its pytest node id: the file defines it
        file, name = path.split("::", 1)
        return (ROOT / file).is_file() and re.search(rf"def {re.escape(name)}\b", (ROOT / file).read_text()) is not None
    if "*" in path:
        return any(ROOT.glob(path))
    return (ROOT / path).exists() or (ROOT / f"{path}.yaml").exists()  # a config named as Hydra does


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_cite_only_files_that_exist(doc):
    missing = sorted(p for p in cited_paths(doc.read_text()) if not exists(p))
    assert not missing, f"{doc.relative_to(ROOT)} cites {missing}"


def test_architecture_names_paths_that_exist():
    named = cited_paths((ROOT / "docs" / "architecture.md").read_text())
    assert len(named) > 30  # the map's table and paragraphs are read, not skipped
    assert not sorted(p for p in named if not exists(p))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_the_anatomy_of_the_map(family):
    package = ROOT / "lightning_modules" / family
    wanted = [package / "module.py", package / "settings.py", ROOT / "bench" / f"{family}.py",
              ROOT / "docs" / f"{family}.md", ROOT / "tests" / family]
    if family != "har":  # har trains with the shared classifier's cross-entropy
        wanted.append(package / "losses.py")
    missing = [str(p.relative_to(ROOT)) for p in wanted if not p.exists()]
    if not ((package / "nets.py").exists() or (package / "nets").is_dir()):
        missing.append(f"lightning_modules/{family}/nets.py (or nets/)")
    assert not missing, missing


def docstring(init) -> str:
    return ast.get_docstring(ast.parse(init.read_text())) or ""


@pytest.mark.parametrize("family", FAMILIES)
def test_the_package_docstring_names_every_module(family):
    package = ROOT / "lightning_modules" / family
    family_doc = docstring(package / "__init__.py")
    unnamed = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        own_doc = docstring(path.parent / "__init__.py")
        if not re.search(rf"\b{re.escape(path.name)}\b", family_doc + "\n" + own_doc):
            unnamed.append(str(path.relative_to(package)))
    for sub in sorted(p for p in package.iterdir() if (p / "__init__.py").exists()):
        if f"{sub.name}/" not in family_doc:
            unnamed.append(f"{sub.name}/")
    assert not unnamed, f"lightning_modules/{family}/__init__.py does not name {unnamed}"


def test_the_har_module_is_what_the_har_configs_train(tmp_path):
    from hydra.utils import get_class

    from lightning_modules.har.module import HarClassifier
    from tests.helpers import compose_run

    for experiment in ("har_base", "har_finetune"):
        assert get_class(compose_run([f"experiment={experiment}"], tmp_path).model._target_) is HarClassifier


def test_bench_image_runs_each_image_bench_and_names_them_on_bad_input(monkeypatch, capsys):
    import sys

    from bench import image

    for name, module in image.BENCHES.items():
        ran = []
        monkeypatch.setattr(f"{module}.main", lambda: ran.append(sys.argv[1:]))
        image.main([name, "--steps", "1"])
        assert ran == [["--steps", "1"]]
    try:
        image.main(["nope"])
    except SystemExit as stop:
        assert stop.code == 2 and "distill | deit | layout" in capsys.readouterr().err
    else:
        raise AssertionError("an unknown bench name must exit 2")
