"""``hf:ORG/NAME[@REVISION]`` -> a snapshot folder of the local Hugging Face cache, resolved offline.

The cache is found as huggingface_hub finds it (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``) and read as huggingface_hub lays it
out: ``models--ORG--NAME/refs/<rev>`` holds a commit, ``snapshots/<commit>/`` holds the files (symlinks
into ``blobs/``). Nothing is downloaded; every file used must resolve inside the snapshot or the repo's blobs.

>>> snapshot_folder("hf:openai-community/gpt2@main")   # .../models--openai-community--gpt2/snapshots/<commit>
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from modscope.errors import LoadError

PREFIX = "hf:"
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REPO = re.compile(rf"^(?:{_NAME}/)?{_NAME}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REVISION = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")
#: a refs/ file holds one commit hash; anything larger is not a ref
_MAX_REF = 1024


def cache_root() -> Path:
    """The hub cache folder, by huggingface_hub's environment conventions."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def parse(target: str) -> tuple[str, str]:
    """``hf:ORG/NAME@REV`` -> (``ORG/NAME``, ``REV``; ``main`` when omitted), validated."""
    repo, at, revision = target[len(PREFIX) :].partition("@")
    if not _REPO.match(repo) or ".." in repo or "--" in repo:
        raise LoadError(f"{target!r}: expected hf:ORG/NAME or hf:ORG/NAME@REVISION (a Hugging Face repo id)")
    revision = revision if at else "main"
    if not _REVISION.match(revision) or ".." in revision.split("/") or revision.startswith("/"):
        raise LoadError(f"{target!r}: {revision!r} is not a revision (a branch, tag or 40-hex commit)")
    return repo, revision


def repo_folder(repo: str) -> Path:
    return cache_root() / ("models--" + repo.replace("/", "--"))


def snapshot_folder(target: str) -> Path:
    """The snapshot a ``hf:`` TARGET names; exit 2 with where it looked when it is not cached."""
    repo, revision = parse(target)
    folder = repo_folder(repo)
    how = (
        f"modscope never downloads: fetch it first (hf download {repo}{'' if revision == 'main' else ' --revision ' + revision}), "
        "or point HF_HUB_CACHE / HF_HOME at the cache that holds it"
    )
    if not folder.is_dir():
        raise LoadError(f"{target} is not in the local Hugging Face cache (looked for {folder}); {how}")
    commit = revision if _COMMIT.match(revision) else _read_ref(folder, revision, target, how)
    snapshot = folder / "snapshots" / commit
    if not snapshot.is_dir():
        raise LoadError(f"{target}: commit {commit} has no snapshot in the cache (looked for {snapshot}); {how}")
    _inside(snapshot, folder / "snapshots", target)
    return snapshot


def allowed_roots(snapshot: Path) -> tuple[str, ...]:
    """Where a snapshot's files may resolve: the snapshot itself, and its repo's ``blobs/``."""
    return (str(snapshot), str(snapshot.parent.parent / "blobs"))


def _read_ref(folder: Path, revision: str, target: str, how: str) -> str:
    from modscope.checkpoint.guard import read_bytes

    ref = folder / "refs" / revision
    if not ref.is_file():
        raise LoadError(f"{target}: revision {revision!r} is not in the local cache (looked for {ref}); {how}")
    _inside(ref, folder / "refs", target)
    text = read_bytes(str(ref), limit=_MAX_REF, what="Hugging Face cache ref").decode("ascii", "replace").strip()
    if not _COMMIT.match(text):
        raise LoadError(f"{ref} does not hold a commit hash (a damaged cache: download {target[len(PREFIX):]} again)")
    return text


def _inside(path: Path, root: Path, target: str) -> None:
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, real_root]) != real_root or real == real_root:
        raise LoadError(f"{target}: {path} resolves outside {root} (after resolving symlinks): refused")
