"""Griffe extension: render the reST-isms of the docstrings (roles, doctest blocks) as Markdown.

The package's docstrings use reStructuredText roles (``:class:`~esper_env.config.EsperConfig```,
``:meth:`to_json```). MkDocs renders Markdown, where a role would show as its literal text, so every
role becomes an *optional* autorefs link: a link when the target is rendered on some page of the
site, plain code when it is not. A name is resolved like Sphinx does: absolute when it resolves as
written, otherwise relative to the documented object and its parents; a name that resolves nowhere
stays plain code.

A doctest block (lines from ``>>>`` to the next blank line, outside a fenced block) becomes a fenced
``pycon`` block, as Sphinx shows it. Outside code, an underscore next to a brace is escaped: names
such as ``slot{s}_stage_{dormant..resetting}`` in the observation table would otherwise open
emphasis (and ``attr_list`` would read the braces as attributes).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

CODE = re.compile(r"(```.*?```|``.+?``|`[^`\n]+`)", flags=re.S)
BRACE_UNDERSCORE = re.compile(r"(?<=\})_|_(?=\{)")
ROLE = re.compile(r":(?:py:)?(?:class|mod|meth|func|data|attr|exc|obj|const):`(~?)([\w.]+)(?:\(\))?`")


def _exists(obj: griffe.Object, path: str) -> bool:
    try:
        obj.modules_collection[path]
    except (KeyError, ValueError, AttributeError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    return True


def _resolve(obj: griffe.Object, name: str) -> str | None:
    """The full path ``name`` means in the docstring of ``obj``, or None."""
    if _exists(obj, name):
        return name
    scope: griffe.Object | None = obj
    while scope is not None:
        candidate = f"{scope.path}.{name}"
        if _exists(obj, candidate):
            return candidate
        scope = scope.parent
    return None


def _convert(obj: griffe.Object, text: str) -> str:
    def one(match: re.Match[str]) -> str:
        short, name = match.group(1) == "~", match.group(2)
        shown = name.rsplit(".", 1)[-1] if short else name
        target = _resolve(obj, name)
        if target is None:
            return f"`{shown}`"
        return (f'<autoref identifier="{html.escape(target)}" optional>'
                f"<code>{html.escape(shown)}</code></autoref>")

    return ROLE.sub(one, text)


def _fence_doctests(text: str) -> str:
    out: list[str] = []
    lines = text.split("\n")
    i, fenced = 0, False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or not line.lstrip().startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        block: list[str] = []
        while i < len(lines) and lines[i].strip():
            block.append(lines[i])
            i += 1
        out += [f"{indent}```pycon", *block, f"{indent}```"]
    return "\n".join(out)


def _escape_brace_underscores(text: str) -> str:
    parts = CODE.split(text)  # odd indices are code
    return "".join(part if i % 2 else BRACE_UNDERSCORE.sub(r"\\_", part) for i, part in enumerate(parts))


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring of a package once it is loaded (so that names resolve)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:  # noqa: D102
        seen: set[int] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None:
                text = _escape_brace_underscores(_fence_doctests(obj.docstring.value))
                obj.docstring.value = _convert(obj, text)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
