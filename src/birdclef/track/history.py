"""Read small git-tracked files (metrics, plots data) as they were at a revision, or in the workspace."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKSPACE = "workspace"


class RevisionError(ValueError):
    """A revision that git cannot resolve."""


@dataclass
class Revision:
    """The files of one revision: ``git show REV:path`` for a commit, the file system for ``workspace``.

    Attributes:
        repo: the git working tree.
        rev: what the user named (``HEAD~1``, a sha, a tag, ``workspace``).
        sha: the full commit sha (HEAD's for the workspace; "" outside git).
        subject: the commit's subject line ("uncommitted changes" for the workspace).
        date: the commit date (ISO 8601), "" for the workspace.
    """

    repo: Path
    rev: str
    sha: str = ""
    subject: str = ""
    date: str = ""
    _tree: list[str] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, repo: str | Path, rev: str) -> Revision:
        """Resolve ``rev`` in ``repo``; raise :class:`RevisionError` naming it when git does not know it."""
        repo = Path(repo)
        if rev == WORKSPACE:
            return cls(repo, rev, _git(repo, "rev-parse", "HEAD") or "", "uncommitted changes", "")
        sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        if not sha:
            raise RevisionError(f"{repo}: unknown revision {rev!r}")
        subject, _, date = _git(repo, "log", "-1", "--format=%s%x00%cI", sha).partition("\x00")
        return cls(repo, rev, sha, subject, date)

    @property
    def label(self) -> str:
        """A short display name: ``workspace`` or ``<rev> (<sha7>)``."""
        if self.rev == WORKSPACE:
            return WORKSPACE
        return self.rev if self.rev.startswith(self.sha[:7]) else f"{self.rev} ({self.sha[:7]})"

    def read_text(self, path: str) -> str | None:
        """The file's text at this revision, or None when it does not exist there."""
        if self.rev == WORKSPACE:
            p = self.repo / path
            return p.read_text() if p.is_file() else None
        try:
            return subprocess.run(
                ["git", "show", f"{self.sha}:{path}"], cwd=self.repo, capture_output=True, text=True, check=True
            ).stdout
        except subprocess.CalledProcessError:
            return None

    def read_json(self, path: str) -> Any | None:
        """Parsed JSON at this revision, or None when missing or not valid JSON."""
        text = self.read_text(path)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return None

    def glob(self, pattern: str) -> list[str]:
        """Files matching a glob whose ``*`` stays within one folder, in natural order (it2 before it10).

        In the workspace this sees untracked and git-ignored files too (DVC outputs such as build/).
        """
        if self.rev == WORKSPACE:
            found = [p.relative_to(self.repo).as_posix() for p in self.repo.glob(pattern) if p.is_file()]
        else:
            if self._tree is None:
                self._tree = _git(self.repo, "ls-tree", "-r", "--name-only", self.sha).splitlines()
            found = [p for p in self._tree if match_path(p, pattern)]
        return sorted(found, key=natural_key)


def match_path(path: str, pattern: str) -> bool:
    """Glob match folder by folder (``*`` never crosses ``/``), like :meth:`pathlib.Path.glob`."""
    parts, pats = path.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pats, strict=True))


def natural_key(text: str) -> list[Any]:
    """Sort key that orders embedded numbers numerically."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _git(repo: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError, NotADirectoryError):
        return ""


def lookup(doc: Any, key: str) -> float | None:
    """A numeric value by dotted key; for per-member files (``{member: {key: ...}}``) the mean over members.

    Returns None when no numeric value is found.
    """
    node: Any = doc
    for part in key.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            node = None
            break
    if isinstance(node, int | float) and not isinstance(node, bool):
        return float(node)
    if isinstance(doc, Mapping):
        values = [lookup(v, key) for v in doc.values() if isinstance(v, Mapping)]
        values = [v for v in values if v is not None]
        if values:
            return sum(values) / len(values)
    return None


def metric_at(rev: Revision, ref: str) -> float | None:
    """Resolve a metric reference ``FILE:KEY`` at a revision.

    ``FILE`` may hold a glob (``metrics/train/it*.json``): the last match in natural order is used (the final
    iteration). Several references separated by ``|`` are tried in turn.
    """
    for one in ref.split("|"):
        path, _, key = one.strip().rpartition(":")
        if not path:
            raise ValueError(f"metric reference {one!r} is not FILE:KEY")
        paths = rev.glob(path) if any(c in path for c in "*?[") else [path]
        for candidate in reversed(paths):
            value = lookup(rev.read_json(candidate), key)
            if value is not None:
                return value
    return None
