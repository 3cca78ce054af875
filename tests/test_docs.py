"""The documentation site (docs/, mkdocs.yml): its reference pages are what the
code generates (docs/gen_reference.py), every option ``pytest --help`` lists is
documented, and the strict build refuses a broken link."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import markdown
import pytest

from pytest_miabench.config.options import OPTIONS, Option

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _generator()


class _Tables(HTMLParser):
    """The rendered page's table rows (cell texts), heading ids, link targets and tags."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.tags: set[str] = set()
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "a" and found.get("href"):
            self.hrefs.append(str(found["href"]))
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def render(page: str) -> _Tables:
    """The page as MkDocs renders it (Python-Markdown with tables and toc), parsed."""
    parser = _Tables()
    parser.feed(markdown.markdown(page, extensions=["tables", "toc", "md_in_html", "attr_list"]))
    return parser


def test_the_reference_pages_are_what_the_code_generates(tmp_path: Path) -> None:
    generated = gen.pages()
    assert {"reference/options.md", "reference/protocols.md"} <= set(generated)
    gen.write(generated, tmp_path)  # the generator writes what it returns
    assert not gen.stale(generated, tmp_path)
    assert not gen.stale(generated), "run python docs/gen_reference.py and commit docs/reference/"


def test_an_option_added_without_regenerating_makes_the_pages_stale() -> None:
    extra = Option("--mia-brand-new", str, None, "an option nobody documented yet", "X")
    generated = gen.pages(options=(*OPTIONS, extra))
    assert gen.stale(generated) == ["reference/options.md"]
    assert "--mia-brand-new X" in generated["reference/options.md"]


def test_the_check_mode_names_the_stale_page(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    docs = tmp_path / "docs"
    gen.write(gen.pages(), docs)
    monkeypatch.setattr(gen, "DOCS", docs)
    assert gen.main(["--check"]) == 0
    (docs / "reference/protocols.md").write_text("edited by hand\n", encoding="utf-8")
    assert gen.main(["--check"]) == 1
    assert "docs/reference/protocols.md is stale" in capsys.readouterr().err


def test_every_option_is_one_table_row_with_its_help_as_plain_text() -> None:
    tricky = "a | b <script>x</script> *not bold* _not em_ [no](link) `no code` back\\slash 95% & more"
    options = (*OPTIONS, Option("--mia-tricky", str, ("a", "b"), tricky, "A|B"))
    page = render(gen.options_page(options))
    header, *rows = page.rows
    assert header == ["option", "ini key", "default", "help"]
    assert len(rows) == len(options)
    assert all(len(row) == 4 for row in rows), [row for row in rows if len(row) != 4]
    for option, row in zip(options, rows):
        assert row[0].startswith(option.flag) and row[1].startswith(option.dest)
        assert row[3] == " ".join(option.help.split())
    assert rows[-1] == ["--mia-tricky A|B", "mia_tricky", "a,b", tricky]
    # nothing in a help text became markup
    assert not {"script", "strong", "em", "a"} & page.tags


def test_the_protocol_table_has_every_builtin_protocol() -> None:
    from pytest_miabench.protocols import builtin_protocols

    protocols = builtin_protocols()
    page = render(gen.protocols_page(protocols))
    header, *rows = page.rows
    assert [row[0] for row in rows] == list(protocols)
    assert all(len(row) == len(header) for row in rows)
    by_name = {row[0]: dict(zip(header, row)) for row in rows}
    assert by_name["vlmevalkit"]["image detail"] == "low" and by_name["vlmevalkit"]["judge sees the image"] == "yes"
    assert by_name["apple"]["judge temperature"] == "API default"
    assert by_name["lmms-eval"]["judge max_tokens"] == str(protocols["lmms-eval"].max_tokens)


SMALL_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "description": "A run's report | with a pipe.",
    "type": "object",
    "required": ["schema_version", "samples"],
    "properties": {
        "schema_version": {"const": 1, "description": "the format's version"},
        "total_score": {"type": ["number", "null"], "description": "mean of the <counted> scores"},
        "verdict": {"enum": ["pass", "fail"]},
        "selection": {
            "type": "object",
            "description": "what was run",
            "required": ["rows"],
            "properties": {"rows": {"type": "integer", "description": "rows in the dataset"}},
        },
        "by_type": {"type": "object", "additionalProperties": {"type": "number"}},
        "samples": {"type": "array", "items": {"$ref": "#/$defs/Sample"}},
        "missing": {"type": "array", "items": {"type": "string"}},
        "usage": {"anyOf": [{"$ref": "#/$defs/Usage"}, {"type": "null"}]},
    },
    "$defs": {
        "Sample": {
            "type": "object",
            "required": ["index"],
            "properties": {
                "index": {"type": "integer", "description": "dataset row"},
                "components": {"type": "array", "items": {"type": "object", "properties": {"weight": {"type": "integer"}}}},
            },
        },
        "Usage": {"type": "object", "properties": {"api_calls": {"type": "integer"}}},
        "Score": {"type": "number", "description": "0 to 1"},
    },
}


def test_the_schema_page_renders_properties_types_required_and_defs() -> None:
    page = render(gen.schema_page(SMALL_SCHEMA))
    rows = {row[0]: row for row in page.rows if row[0] != "key"}
    assert rows["schema_version"] == ["schema_version", "1", "yes", "the format's version"]
    assert rows["total_score"] == ["total_score", "number or null", "no", "mean of the <counted> scores"]
    assert rows["verdict"][1] == 'one of "pass", "fail"'
    assert rows["selection"][1] == "object" and rows["rows"] == ["rows", "integer", "yes", "rows in the dataset"]
    assert rows["by_type"][1] == "{str: number}"
    assert rows["samples"][1:3] == ["list of Sample", "yes"]
    assert rows["missing"][1] == "list of string"
    assert rows["usage"][1] == "Usage or null"
    assert rows["index"] == ["index", "integer", "yes", "dataset row"]
    assert rows["components"][1] == "list of object" and rows["weight"][1] == "integer"
    assert rows["api_calls"][1] == "integer"
    # Every link in the page goes to a heading of the page.
    assert page.hrefs and all(href.startswith("#") and href[1:] in page.ids for href in page.hrefs), (page.hrefs, page.ids)
    assert {"report", "reportselection", "sample", "samplecomponents", "usage", "score"} <= page.ids


def test_the_schema_page_is_written_only_when_the_schema_exists(tmp_path: Path) -> None:
    schema = tmp_path / "report.schema.json"
    assert "reference/report-schema.md" not in gen.pages(schema_path=schema)
    schema.write_text(json.dumps(SMALL_SCHEMA), encoding="utf-8")
    assert gen.pages(schema_path=schema)["reference/report-schema.md"] == gen.schema_page(SMALL_SCHEMA)


def _site_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted(DOCS.rglob("*.md")))


@pytest.mark.e2e
def test_every_option_pytest_help_lists_is_in_the_site() -> None:
    shown = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:randomly"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    flags = set(re.findall(r"(?<![\w-])--mia-[a-z0-9-]*[a-z0-9]", shown.stdout))
    ini_keys = set(re.findall(r"^  (mia_[a-z0-9_]+) ", shown.stdout, re.M))
    # all of them, not a parse that found nothing
    assert len(flags) >= len(OPTIONS) and len(ini_keys) == len(OPTIONS), (flags, ini_keys)
    site = _site_text()
    missing = sorted(name for name in flags | ini_keys if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", site))
    assert not missing, f"listed by pytest --help, in no page of docs/: {missing}"


def test_the_changelog_and_the_architecture_are_part_of_the_site() -> None:
    """Included from the root files, not copied: a copy would drift."""
    for page, root_file in (("changelog.md", "CHANGELOG.md"), ("architecture.md", "ARCHITECTURE.md")):
        assert f'--8<-- "{root_file}"' in (DOCS / page).read_text(encoding="utf-8")
        assert (ROOT / root_file).is_file()


def _mkdocs_build(root: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="the docs extra: pip install -e '.[docs]'")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(root / "site")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.e2e
def test_the_strict_build_passes_and_refuses_a_broken_link(tmp_path: Path) -> None:
    """What .ci/run does, and proof that it would catch a broken link."""
    for name in ("mkdocs.yml", "CHANGELOG.md", "ARCHITECTURE.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    built = _mkdocs_build(tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "site" / "reference" / "options" / "index.html").is_file()
    page = tmp_path / "docs" / "troubleshooting.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee [nowhere](no-such-page.md).\n", encoding="utf-8")
    broken = _mkdocs_build(tmp_path)
    assert broken.returncode != 0 and "no-such-page.md" in broken.stdout + broken.stderr


def test_the_readme_is_short_and_its_links_reach_the_site() -> None:
    """README.md is the PyPI long description: at most 12 KB, and every relative link in it names a file
    of the repository (the site's sources under docs/, which the strict build checks in turn)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) <= 12 * 1024
    links = [target.split("#", 1)[0] for target in re.findall(r"\]\(([^)\s]+)\)", readme) if "://" not in target]
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if link and not (ROOT / link).exists()]
    assert not missing, missing
    # The test command is what .ci/run runs.
    assert "pip install -e '.[test]' && python -m pytest -n 2" in readme
    assert "pip install -e '.[test]' && python -m pytest -n 2" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
