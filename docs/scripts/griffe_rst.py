"""Griffe extension for the API reference: turn the reST bits of our docstrings into Markdown.

The library's docstrings are Google-style with a few reStructuredText constructs that read well in
``help()`` and in an editor: ``:math:`...``` roles, ``.. math::`` blocks and cross-reference roles
(``:class:`~cooper_like.Constraint```). mkdocstrings renders docstrings as Markdown, so this extension
rewrites them before they are parsed:

- ``:math:`x``` becomes ``\\(x\\)`` and a ``.. math::`` block becomes a ``$$ ... $$`` block (rendered
  by ``pymdownx.arithmatex``; a block with ``&`` or ``\\\\`` is wrapped in ``aligned``);
- ``:class:`~a.b.C``` becomes ``C`` in code font, ``:func:`a.b``` becomes ``a.b`` in code font;
- the reST escape ``\\ `` (backslash, space) after a literal is dropped.

It is loaded by ``mkdocs.yml`` (``extensions: - docs/scripts/griffe_rst.py:RstRoles``) and changes
nothing in the library itself.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

MATH_ROLE = re.compile(r":math:`([^`]+)`")
XREF_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|obj|exc|const):`~?([^`]+)`")
LITERAL = re.compile(r"``([^`]+)``")
DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<rest>.*)$")


def _short(target: str, tilde: bool) -> str:
    return target.rsplit(".", 1)[-1] if tilde else target


def convert_roles(text: str) -> str:
    """Inline roles: math to ``\\( \\)``, cross-references to code spans."""
    text = MATH_ROLE.sub(lambda match: "\\(" + match.group(1) + "\\)", text)

    def xref(match: re.Match[str]) -> str:
        whole = match.group(0)
        tilde = "`~" in whole
        return f"`{_short(match.group(1), tilde)}`"

    text = XREF_ROLE.sub(xref, text)
    return text.replace("`\\ ", "`")  # the reST escape in ``state_dict``\ s


def _literal_in_math(line: str) -> str:
    """reST literals (double backticks) inside a formula become ``\\texttt``."""
    return LITERAL.sub(lambda match: "\\texttt{" + match.group(1).replace("_", "\\_") + "}", line)


def _math_block(indent: str, lines: list[str]) -> list[str]:
    body = [_literal_in_math(line) for line in lines]
    while body and not body[-1].strip():
        body.pop()
    while body and not body[0].strip():
        body.pop(0)
    content = "\n".join(body)
    if "&" in content or "\\\\" in content:
        body = ["\\begin{aligned}", *body, "\\end{aligned}"]
    return ["", f"{indent}$$", *(f"{indent}{line}" for line in body), f"{indent}$$", ""]


def convert_math_blocks(text: str) -> str:
    """``.. math::`` directives (with the formula on the same line and/or indented below) to ``$$`` blocks."""
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        match = DIRECTIVE.match(lines[index])
        if match is None:
            out.append(lines[index])
            index += 1
            continue
        indent = match.group("indent")
        body: list[str] = [match.group("rest")] if match.group("rest").strip() else []
        index += 1
        block: list[str] = []
        while index < len(lines):
            line = lines[index]
            if line.strip() and len(line) - len(line.lstrip()) <= len(indent):
                break
            block.append(line)
            index += 1
        nonblank = [line for line in block if line.strip()]
        depth = min((len(line) - len(line.lstrip()) for line in nonblank), default=0)
        body += [line[depth:] if line.strip() else "" for line in block]
        out += _math_block(indent, body)
    return "\n".join(out)


def convert(text: str) -> str:
    """The whole rewrite of one docstring."""
    return convert_roles(convert_math_blocks(text))


class RstRoles(griffe.Extension):
    """Rewrites every docstring of the loaded packages (see the module docstring)."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is not None and docstring.value:
            docstring.value = convert(docstring.value)
