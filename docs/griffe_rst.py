"""A griffe extension for the API reference: the docstrings' reST roles as Markdown.

gradtx's docstrings state their math the way optax's do (``.. math::`` blocks,
``:math:`` and ``:func:`` roles) so that they read well in ``help()``. The
site renders Markdown with MathJax, so before mkdocstrings renders a
docstring this rewrites ``.. math::`` blocks to ``$$ ... $$``, ``:math:`x``` to
``$x$`` and cross-reference roles (``:func:``, ``:class:``, ...) to code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_INLINE_MATH = re.compile(r":math:`([^`]+)`")
_ROLE = re.compile(r":(?:func|class|meth|attr|mod|obj|data):`~?([^`]+)`")
_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<body>.*)$")


def rst_to_markdown(text: str) -> str:
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        match = _BLOCK.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        indent, body, i = match["indent"], [match["body"]] if match["body"] else [], i + 1
        while i < len(lines) and (
            not lines[i].strip()
            and not body
            or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
        ):
            body.append(lines[i].strip())
            i += 1
        out += ["", f"{indent}$$", *(f"{indent}{b}" for b in body if b), f"{indent}$$", ""]
    text = "\n".join(out)
    return _ROLE.sub(r"`\1`", _INLINE_MATH.sub(r"$\1$", text))


class RstToMarkdown(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
