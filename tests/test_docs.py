"""Every Python code block of the documentation (docs/**/*.md) runs.

The blocks of a page run in order in one namespace (a tutorial builds on its earlier blocks), in a
temporary working directory, with ``COOPER_LIKE_DOCS_QUICK=1`` in the environment: long tutorials read
it to train on reduced sizes (the flag is explained on the pages that use it). The README's blocks are
run by ``tests/test_readme.py``.

Markers, an HTML comment on the line right before a fenced block (invisible on the site):

- ``<!-- no-run -->``: the block is not executed (a Cooper script on the migration page, a shell
  session, a fragment);
- ``<!-- raises: ValueError -->``: the block must raise this exception (a builtin, or a dotted name
  resolved in the page's namespace, e.g. ``cooper.optim.NonFiniteError``);
  ``<!-- raises: ValueError "maximize=False" -->`` also requires the message to contain the quoted
  text. The error pages use it, so the messages they quote are the messages the library raises;
- ``<!-- requires: lightning -->``: the page needs an optional package; its test is skipped when the
  package is not installed (the block itself runs).
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
QUICK_FLAG = "COOPER_LIKE_DOCS_QUICK"

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")
MARKER = re.compile(
    r"^[ \t]*<!--[ \t]*(?P<kind>no-run"
    r'|raises:[ \t]*(?P<error>[\w.]+)(?:[ \t]+"(?P<message>[^"]*)")?'
    r"|requires:[ \t]*(?P<module>[\w.]+))[ \t]*-->[ \t]*$"
)
PYTHON = {"python", "py", "python3"}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    run: bool
    raises: str | None
    message: str | None = None
    requires: str | None = None


def extract_blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` with their markers (fences may be indented, e.g. in admonitions)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        language = opening.group("info").split()[0].strip("{}.") if opening.group("info").strip() else ""
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = MARKER.match(previous)
        body: list[str] = []
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            line = lines[end]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            end += 1
        if end == len(lines):
            raise ValueError(f"{page}:{index + 1}: unclosed code fence")
        blocks.append(
            Block(
                page=page,
                line=index + 1,
                language=language,
                code="\n".join(body) + "\n",
                run=language in PYTHON and (marker is None or marker.group("kind") != "no-run"),
                raises=marker.group("error") if marker is not None else None,
                message=marker.group("message") if marker is not None else None,
                requires=marker.group("module") if marker is not None else None,
            )
        )
        index = end + 1
    return blocks


def doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def runnable_pages() -> list[Path]:
    return [page for page in doc_pages() if any(block.run for block in extract_blocks(page))]


def resolve_error(name: str, namespace: dict[str, Any]) -> type[BaseException]:
    head, *rest = name.split(".")
    value: Any = namespace[head] if head in namespace else getattr(builtins, head)
    for part in rest:
        value = getattr(value, part)
    if not (isinstance(value, type) and issubclass(value, BaseException)):
        raise TypeError(f"raises marker names {name!r}, which is not an exception class")
    return value


def display(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def run_page(page: Path) -> None:
    blocks = extract_blocks(page)
    for block in blocks:
        if block.requires is not None:
            pytest.importorskip(block.requires, reason=f"{display(page)} needs {block.requires}")
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for block in blocks:
        if not block.run:
            continue
        where = f"{display(page)}:{block.line}"
        # Blank lines in front keep the line numbers of tracebacks equal to the page's.
        compiled = compile("\n" * block.line + block.code, where, "exec")
        if block.raises is None:
            exec(compiled, namespace)
            continue
        with pytest.raises(BaseException) as caught:  # the class is checked against the marker below
            exec(compiled, namespace)
        expected = resolve_error(block.raises, namespace)
        assert isinstance(caught.value, expected), (
            f"{where}: expected {block.raises}, got {type(caught.value).__name__}: {caught.value}"
        )
        assert block.message is None or block.message in str(caught.value), (
            f"{where}: the message of {type(caught.value).__name__} does not contain {block.message!r}: "
            f"{caught.value}"
        )


def test_docs_have_runnable_pages() -> None:
    assert len(runnable_pages()) >= 5


@pytest.mark.parametrize("page", runnable_pages(), ids=lambda page: str(page.relative_to(DOCS)))
def test_page_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(QUICK_FLAG, "1")
    run_page(page)


def test_requires_marker_skips_the_page_without_the_package(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- requires: surely_not_an_installed_module -->\n```python\nraise SystemExit(1)\n```\n"
    )
    with pytest.raises(pytest.skip.Exception, match="needs surely_not_an_installed_module"):
        run_page(page)


def test_every_marker_precedes_a_block() -> None:
    for page in doc_pages():
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if MARKER.match(line):
                following = next((text for text in lines[number + 1 :] if text.strip()), "")
                assert FENCE.match(following), f"{page}:{number + 1}: marker not followed by a code block"


def test_python_blocks_are_tagged() -> None:
    """A block without a language would silently escape the collector: every fence names its language."""
    for page in doc_pages():
        for block in extract_blocks(page):
            assert block.language, f"{page}:{block.line}: code fence without a language"


def test_quickstart_page_is_the_example_file() -> None:
    blocks = [block for block in extract_blocks(DOCS / "quickstart.md") if block.run]
    assert blocks[0].code == (ROOT / "examples" / "quickstart.py").read_text()


def test_kl_tutorial_is_the_example_file() -> None:
    blocks = [block for block in extract_blocks(DOCS / "tutorials" / "kl-constraint.md") if block.run]
    assert blocks[0].code == (ROOT / "examples" / "kl_constraint.py").read_text()


def test_every_page_is_in_the_navigation() -> None:
    text = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r":\s*([\w./-]+\.md)\s*$", text, flags=re.M))
    pages = {str(page.relative_to(DOCS)) for page in doc_pages()}
    assert pages == listed, f"not in nav: {sorted(pages - listed)}; missing files: {sorted(listed - pages)}"


def test_collector_reads_markers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n<!-- no-run -->\n```python\nimport cooper\n```\n\n"
        '<!-- raises: ValueError "bad x" -->\n```python\nraise ValueError("a bad x here")\n```\n\n'
        "!!! note\n    ```python\n    value = 1\n    ```\n\n```bash\nls\n```\n"
        "<!-- requires: json -->\n```python\nimport json\n```\n"
    )
    blocks = extract_blocks(page)
    assert [(b.run, b.raises, b.language) for b in blocks] == [
        (False, None, "python"),
        (True, "ValueError", "python"),
        (True, None, "python"),
        (False, None, "bash"),
        (True, None, "python"),
    ]
    assert blocks[4].requires == "json"
    assert blocks[1].message == "bad x"
    assert blocks[2].code == "value = 1\n"
    run_page(page)
