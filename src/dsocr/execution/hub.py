"""``--model``: ``replica``, a local checkpoint directory, or a hub id found in the local Hugging Face cache.

dsocr never downloads: a hub id (``deepseek-ai/DeepSeek-OCR``) resolves only to a snapshot that is
already in the cache, in huggingface_hub's layout::

    $HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub)
      models--deepseek-ai--DeepSeek-OCR/
        refs/main                 the commit hash of the snapshot ``main`` points to
        snapshots/<commit>/       config.json, *.py, *.safetensors (links into blobs/)

``refs/main`` picks the snapshot; without it the one snapshot there (several: an error naming them).
Pure path logic, no torch and no huggingface_hub import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs

from dsocr.contract.errors import BadInput, InputNotFound

MODEL_REPLICA: Final = "replica"
#: ``owner/name`` as the hub spells a repository id.
HUB_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
REVISION: Final = "main"


@attrs.frozen
class ModelSource:
    """Where ``--model`` points: the replica, or a checkpoint directory (maybe a cache snapshot)."""

    spec: str  #: what the user gave
    directory: Path | None  #: the checkpoint directory (None: the replica)
    hub_id: str | None = None  #: set when ``spec`` was a hub id
    revision: str | None = None  #: the snapshot's commit, for a hub id

    @property
    def is_replica(self) -> bool:
        """Whether this is dsocr's replica with no checkpoint."""
        return self.directory is None

    def describe(self) -> str:
        """``replica``, the directory, or ``hub id (snapshot DIR)``."""
        if self.directory is None:
            return MODEL_REPLICA
        if self.hub_id:
            return f"{self.hub_id} (snapshot {self.directory})"
        return str(self.directory)


def hub_cache(env: Mapping[str, str] | None = None) -> Path:
    """The hub cache directory huggingface_hub uses (``HF_HUB_CACHE``, ``HF_HOME/hub``, ``~/.cache/...``)."""
    e = os.environ if env is None else env
    if e.get("HF_HUB_CACHE"):
        return Path(e["HF_HUB_CACHE"]).expanduser()
    if e.get("HUGGINGFACE_HUB_CACHE"):
        return Path(e["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = (
        Path(e["HF_HOME"]).expanduser()
        if e.get("HF_HOME")
        else Path(e.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "huggingface"
    )
    return home / "hub"


def _download_hint(hub_id: str) -> str:
    return (
        f"dsocr never downloads weights: get the files with `huggingface-cli download {hub_id}` "
        "(or from_pretrained once) on a machine with internet, or pass a local checkpoint directory"
    )


def find_snapshot(hub_id: str, env: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """The cached snapshot directory of ``hub_id`` and its commit; InputNotFound/BadInput otherwise."""
    cache = hub_cache(env)
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        raise InputNotFound(
            f"--model {hub_id}: not in the local Hugging Face cache ({repo} is missing); {_download_hint(hub_id)}"
        )
    ref = repo / "refs" / REVISION
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        snap = snapshots / commit
        if not snap.is_dir():
            raise BadInput(
                f"--model {hub_id}: {ref} names snapshot {commit}, which is not in {snapshots}; "
                f"{_download_hint(hub_id)}"
            )
        return snap, commit
    found = sorted(p for p in snapshots.iterdir() if p.is_dir())
    if not found:
        raise InputNotFound(f"--model {hub_id}: the cache holds no snapshot in {snapshots}; {_download_hint(hub_id)}")
    if len(found) > 1:
        raise BadInput(
            f"--model {hub_id}: {len(found)} snapshots in {snapshots} and no refs/{REVISION}: "
            "pass the snapshot directory you mean as --model"
        )
    return found[0], found[0].name


def resolve(spec: str, env: Mapping[str, str] | None = None) -> ModelSource:
    """``replica``, an existing directory, or a hub id in the cache; one-line errors otherwise."""
    if spec == MODEL_REPLICA:
        return ModelSource(spec, None)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ModelSource(spec, path)
    if path.exists():
        raise BadInput(f"--model {spec}: is a file, not a checkpoint directory; pass the directory holding config.json")
    if HUB_ID.fullmatch(spec) and not spec.startswith((".", "/")):
        snap, commit = find_snapshot(spec, env)
        return ModelSource(spec, snap, hub_id=spec, revision=commit)
    raise InputNotFound(
        f"--model {spec}: neither 'replica', an existing checkpoint directory nor a hub id (owner/name); "
        "pass one of them"
    )
