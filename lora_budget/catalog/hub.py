"""Find a model's ``config.json`` in the local Hugging Face cache, or fetch that one file from the Hub.

The cache layout is huggingface_hub's: ``<cache>/models--<org>--<name>/snapshots/<revision>/config.json``
with ``refs/main`` holding the revision the default branch pointed at when it was last fetched. The
cache directory is ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub`` (the
order huggingface_hub's ``constants`` module documents). Only ``config.json`` is ever downloaded (a few
KB, never weights), with ``hf_hub_download``, which stores it in that same cache so the next run is
offline. ``huggingface_hub`` is optional and imported only here, only when a download is needed, so
``plan`` stays fast and torch-free.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lora_budget.errors import LoraBudgetError, UnknownNameError

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_TRUE = ("1", "true", "yes", "on")


def is_repo_id(text: str) -> bool:
    """``org/name``, the only form the Hub and the cache can answer."""
    return bool(_REPO_ID.match(text.strip()))


def cache_dir() -> Path:
    """The Hugging Face hub cache directory this environment uses."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (huggingface_hub's own switch; ``plan --offline`` sets it for the run)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def cached_config(repo_id: str) -> Path | None:
    """The cached ``config.json`` of ``repo_id``: the ``refs/main`` snapshot's, else the newest snapshot's."""
    repo = cache_dir() / ("models--" + repo_id.strip().replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        main = snapshots / ref.read_text().strip() / "config.json"
        if main.is_file():
            return main
    found = [p for p in snapshots.glob("*/config.json") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def download_config(repo_id: str) -> Path:
    """Fetch ``config.json`` of ``repo_id`` from the Hub into the cache; one-line errors for every failure."""
    try:
        import huggingface_hub
    except ImportError:
        raise LoraBudgetError(
            f"{repo_id}: not in the catalog or the local Hugging Face cache, and huggingface_hub is not "
            "installed to fetch its config.json: pip install 'lora-budget[hub]' (or huggingface_hub), "
            "or pass a config.json path"
        ) from None
    from huggingface_hub import errors

    if not reachable():
        raise UnknownNameError(_unreachable(repo_id))
    try:
        path = huggingface_hub.hf_hub_download(repo_id, "config.json", cache_dir=str(cache_dir()))
    except errors.LocalEntryNotFoundError:  # no network: huggingface_hub fell back to the (empty) cache
        raise UnknownNameError(_unreachable(repo_id)) from None
    except errors.GatedRepoError:
        raise LoraBudgetError(_gated(repo_id)) from None
    except errors.RepositoryNotFoundError:
        raise LoraBudgetError(
            f"{repo_id}: no such model on the Hugging Face Hub (or it is private: "
            "run `huggingface-cli login` or set HF_TOKEN)"
        ) from None
    except errors.EntryNotFoundError:
        raise LoraBudgetError(f"{repo_id}: the repository has no config.json; pass a config.json path") from None
    except errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise LoraBudgetError(_gated(repo_id)) from None
        raise LoraBudgetError(
            f"{repo_id}: the Hub refused config.json (HTTP {status}); pass a config.json path"
        ) from None
    except (OSError, ValueError):  # a network failure, or huggingface_hub's own offline refusal
        raise UnknownNameError(_unreachable(repo_id)) from None
    return Path(path)


def reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint (``HF_ENDPOINT``, else huggingface.co) accepts a TCP connection.

    Asked before a download so that no network fails in seconds, not after huggingface_hub's five
    retries (about 25 s). With a proxy configured the direct connection says nothing: assume reachable.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _unreachable(repo_id: str) -> str:
    return (
        f"unknown model {repo_id!r}: not in the catalog or the local Hugging Face cache ({cache_dir()}), and "
        "the Hugging Face Hub could not be reached; connect once to fetch its config.json, or pass a config.json path"
    )


def _gated(repo_id: str) -> str:
    return (
        f"{repo_id}: gated or private on the Hugging Face Hub: accept its licence on "
        f"https://huggingface.co/{repo_id}, then run `huggingface-cli login` or set HF_TOKEN"
    )


def offline_message(repo_id: str) -> str:
    """What was tried, and how to proceed, when offline and the id is nowhere local."""
    return (
        f"unknown model {repo_id!r}: not in the catalog or the local Hugging Face cache ({cache_dir()}), and offline "
        "(HF_HUB_OFFLINE / --offline) so the Hub was not asked; go online once to fetch its config.json, "
        "or pass a config.json path"
    )
