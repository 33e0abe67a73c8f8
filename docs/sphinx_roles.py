"""A griffe extension: the Sphinx roles of our docstrings become links of the API reference.

The docstrings are Sphinx-style, as Airflow's own are (``:class:`~.index.JobIndex```); mkdocstrings renders
them as Markdown, where a role would show as literal text. Each role to one of our objects becomes an
autorefs link (``[`JobIndex`][airflow_provider_batches.jobs.index.JobIndex]``), resolved as Sphinx
resolves it: the full path, a leading dot for "any object ending so", a bare name from the enclosing
class and module outward. A target that does not resolve is left as a link that cannot resolve, so that
the strict build fails on it. Roles to other packages (Airflow, pydantic) become code: no inventory of
theirs can be fetched offline.
"""

from __future__ import annotations

import builtins
import re
from typing import Any

import griffe

PACKAGE = "airflow_provider_batches"
ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):`(~?)([\w.]+)`")
NOTE = re.compile(r"^(\s*)\.\. (note|warning)::", re.MULTILINE)


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring of the package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        paths = _all_paths(pkg)
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj.docstring.value, obj, paths)


def rewrite(text: str, obj: griffe.Object, paths: dict[str, str]) -> str:
    """``text`` with its roles as links and its ``.. note::`` directives as admonitions."""

    def link(match: re.Match[str]) -> str:
        short, target = match.group(1) == "~", match.group(2)
        shown = target.lstrip(".").rpartition(".")[2] if short else target.lstrip(".")
        foreign = "." in target and not target.startswith((".", PACKAGE))
        if foreign or hasattr(builtins, target):
            return f"`{shown}`"  # another package's object, or a builtin
        return f"[`{shown}`][{resolve(target, obj, paths)}]"

    return NOTE.sub(r"\1!!! \2", ROLE.sub(link, text))


def resolve(target: str, obj: griffe.Object, paths: dict[str, str]) -> str:
    """The full path ``target`` names, seen from ``obj``; ``target`` itself when nothing matches.

    :param paths: every object's path, to its own path or, for an imported name, to what it imports.
    """
    if target.startswith("."):
        # Sphinx's "ends with": the match nearest to ``obj`` when several do.
        matches = sorted((p for p in paths if p.endswith(target)), key=lambda p: -_shared(p, obj.path))
        return paths[matches[0]] if matches else target
    scope: griffe.Object | None = obj
    while scope is not None:
        candidate = f"{scope.path}.{target}"
        if candidate in paths:
            return paths[candidate]
        scope = scope.parent
    return paths.get(target, target)


def _shared(a: str, b: str) -> int:
    count = 0
    for x, y in zip(a.split("."), b.split("."), strict=False):
        if x != y:
            break
        count += 1
    return count


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found.extend(_walk(member))  # type: ignore[arg-type]
    return found


def _all_paths(pkg: griffe.Module) -> dict[str, str]:
    paths = {}
    for obj in _walk(pkg):
        paths[obj.path] = obj.path
        for name, member in obj.members.items():
            if member.is_alias and str(member.target_path).startswith(PACKAGE):  # type: ignore[union-attr]
                paths[f"{obj.path}.{name}"] = member.target_path  # type: ignore[union-attr]
    return paths
