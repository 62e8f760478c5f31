"""Revisions of a model as they sit in the local Hugging Face hub cache, read as a run of checkpoints.

The hub cache keeps a repository in ``models--ORG--NAME/``: ``refs/<revision>`` files hold commit hashes,
``snapshots/<commit>/`` the files of each commit (links into ``blobs/``). Checkpoint suites publish their
training steps as revisions: Pythia's ``step0`` ... ``step143000``, OLMo's ``step1000-tokens4B``. Given
``ORG/NAME`` and a glob of revision names, each matching revision is one checkpoint, its step (and tokens, where
the name says them) from its name. Nothing is downloaded: fetch revisions first with ``huggingface_hub`` (see
the README). The cache is ``cache_dir``, else ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HubOptions", "HubRevision", "hub_cache_dir", "hub_revisions", "looks_like_repo_id", "revision_step"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_STEP = re.compile(r"(?:^|[-_])step[-_]?(\d+)(?=$|[-_])")
_TOKENS = re.compile(r"(?:^|[-_])tokens?[-_]?(\d+(?:\.\d+)?)([KMBT]?)(?=$|[-_])", re.IGNORECASE)
_SCALE = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


@dataclass(frozen=True)
class HubOptions:
    """Which revisions of a hub repository to read (``revisions``: a glob, default ``main``) and where the cache
    is (default: the environment's)."""

    revisions: str | None = None
    cache_dir: str | Path | None = None


@dataclass(frozen=True)
class HubRevision:
    """One revision found in the cache: its name, commit, snapshot folder, and step and tokens from its name."""

    name: str
    commit: str
    path: Path
    step: int | None
    tokens: int | None


def hub_cache_dir(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def looks_like_repo_id(text: str) -> bool:
    """``ORG/NAME`` as the hub spells repositories (not a path that exists: callers check that first)."""
    return bool(_REPO_ID.match(text))


def revision_step(name: str) -> tuple[int | None, int | None]:
    """(step, tokens) from a revision name: ``step143000`` -> (143000, None); ``step1000-tokens4B`` ->
    (1000, 4_000_000_000)."""
    step = _STEP.search(name)
    tokens = _TOKENS.search(name)
    count = int(float(tokens.group(1)) * _SCALE[tokens.group(2).upper()]) if tokens else None
    return (int(step.group(1)) if step else None), count


def repo_folder(repo_id: str, cache_dir: str | Path | None = None) -> Path:
    return hub_cache_dir(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def hub_revisions(repo_id: str, options: HubOptions = HubOptions()) -> list[HubRevision]:
    """The cached revisions of ``repo_id`` matching ``options.revisions``, by step (then name).

    Raises FileNotFoundError saying what was looked for and how to fetch it, when the repository or no matching
    revision is in the cache."""
    folder = repo_folder(repo_id, options.cache_dir)
    pattern = options.revisions or "main"
    fetch = (f"fetch it first, e.g. python -c \"import huggingface_hub as h; h.snapshot_download('{repo_id}', "
             f"revision='{pattern if not any(c in pattern for c in '*?[') else 'step1000'}')\"")
    if not folder.is_dir():
        raise FileNotFoundError(f"{repo_id}: not in the hub cache ({folder} does not exist; the cache is "
                                f"--cache-dir, else $HF_HUB_CACHE, else $HF_HOME/hub); {fetch}")
    refs = folder / "refs"
    names = sorted(str(p.relative_to(refs)) for p in refs.rglob("*") if p.is_file()) if refs.is_dir() else []
    chosen = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if not chosen:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else "none"
        raise FileNotFoundError(f"{repo_id}: no cached revision matches {pattern!r} (cached: {shown}); {fetch}")
    found = []
    for name in chosen:
        commit = (refs / name).read_text().strip()
        snapshot = folder / "snapshots" / commit
        step, tokens = revision_step(name)
        found.append(HubRevision(name, commit, snapshot, step, tokens))
    return sorted(found, key=lambda r: (r.step is None, r.step or 0, r.name))
