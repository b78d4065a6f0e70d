"""Getting a pretrained file onto this machine: from the cache, else downloaded once, verified and written atomically.

- ``ensure(name)``: the cached file, downloading it first when it is missing and the network allows. Processes
  sharing a cache take a lock file, so one downloads and the others wait, then find its file; under DDP that one is
  local rank 0 (the others give it a head start).
- A download streams to a hidden partial file beside the target (``gslrm.files``) with a progress bar, hashes as it
  goes, checks the published checksum, and only then renames (atomic) onto the target: an interrupted or corrupt
  download never leaves a file where the loaders look.
- Offline (``GSLRM_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``, or the host unreachable) with the file absent:
  ``MissingWeightsError``, one line naming the file, the expected path and the fetch command.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from gslrm.files import exclusive_lock, written_atomically
from gslrm.weights.errors import MissingWeightsError
from gslrm.weights.registry import SOURCES, Source, destination, source, split_hf

log = logging.getLogger(__name__)

__all__ = ["ensure", "fetch", "verify", "WeightsChecksumError", "offline", "fetch_command"]

CHUNK = 1 << 20
TIMEOUT_S = 30.0  # per network read


class WeightsChecksumError(MissingWeightsError):
    """A downloaded file does not match its published checksum (nothing was written)."""


def offline() -> bool:
    return any(os.environ.get(flag, "").lower() in ("1", "true", "yes") for flag in ("GSLRM_OFFLINE", "HF_HUB_OFFLINE"))


def fetch_command(name: str) -> str:
    return f"python -m gslrm.weights fetch {name}"


def _missing(entry: Source, path: Path, reason: str, config_key: str | None = None) -> MissingWeightsError:
    alternative = f", or set {config_key}" if config_key else ""
    return MissingWeightsError(
        f"{entry.what}: {entry.filename} not found at {path} and {reason}: run `{fetch_command(entry.name)}` on a "
        f"machine with network and copy its cache here (README: pretrained weights){alternative}"
    )


def _local_rank() -> int:
    from gslrm import slurm

    return slurm.local_rank()


def _hasher(checksum: str | None):
    if checksum is None:
        return None, None
    kind, expected = checksum.split(":", 1)
    return hashlib.new(kind), expected.lower()


def _stream(url: str, target: Path, checksum: str | None, label: str) -> None:
    """Download ``url`` to ``target`` through a partial file; verify; rename. Raises OSError / URLError /
    WeightsChecksumError, leaving nothing behind."""
    from tqdm import tqdm

    hasher, expected = _hasher(checksum)
    with written_atomically(target) as partial:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(partial, "wb") as handle:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=None) as bar:
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    bar.update(len(chunk))
            if total is not None and handle.tell() != total:
                raise OSError(f"connection closed after {handle.tell()} of {total} bytes")
            handle.flush()
            os.fsync(handle.fileno())
        if hasher is not None and not hasher.hexdigest().startswith(expected):
            raise WeightsChecksumError(
                f"{url}: checksum mismatch ({hasher.name} {hasher.hexdigest()[:16]}..., published {expected}): "
                "nothing was written; the download or the mirror is corrupt"
            )


def _extract_repo(archive: Path, target: Path) -> None:
    """GitHub's zipball holds one top folder: its contents become ``target`` (as torch.hub lays repositories out)."""
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(scratch)
        tops = [p for p in scratch.iterdir() if p.is_dir()]
        if len(tops) != 1 or not (tops[0] / "hubconf.py").is_file():
            raise OSError(f"{archive.name}: not a torch.hub repository (no single folder with hubconf.py)")
        os.replace(tops[0], target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fetch_url(entry: Source, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.parent / f".{path.name}.lock"):  # one process fetches, the others wait for its file
        if path.exists():  # another process finished it while this one waited for the lock
            return path
        log.info("downloading %s from %s", entry.filename, entry.url)
        if entry.cache == "hub_repo":
            archive = path.with_name(f".{path.name}.zip")
            try:
                _stream(entry.url, archive, entry.checksum, entry.name)
                _extract_repo(archive, path)
            finally:
                archive.unlink(missing_ok=True)
        else:
            _stream(entry.url, path, entry.checksum, entry.name)
    return path


def _fetch_hf(entry: Source) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id, filename = split_hf(entry.url)
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except LocalEntryNotFoundError:  # offline (HF_HUB_OFFLINE) or unreachable, and not cached
        where = destination(entry) / "snapshots" / "*" / filename
        raise _missing(entry, where, "the hub is out of reach or HF_HUB_OFFLINE is set") from None
    except (EntryNotFoundError, RepositoryNotFoundError) as error:
        raise MissingWeightsError(f"{entry.url}: not on the hub ({type(error).__name__})") from None


def fetch_hf_url(url: str) -> Path:
    """Any ``hf://owner/repo/path`` file through huggingface_hub (the ``facelift`` source when it is that file)."""
    from dataclasses import replace

    known = [entry for entry in map(source, SOURCES) if entry.url == url]
    entry = known[0] if known else replace(source("facelift"), name=url, what=url, filename=split_hf(url)[1], url=url)
    return _fetch_hf(entry)


def fetch(name: str, config_key: str | None = None) -> Path:
    """Download ``name`` unless it is cached; returns its path. Errors are one line (MissingWeightsError), naming
    ``config_key`` as the other way to provide the file."""
    entry = source(name)
    if entry.cache == "hf":
        return _fetch_hf(entry)
    path = destination(entry)
    if path.exists():
        return path
    if offline():
        raise _missing(entry, path, "downloads are off (GSLRM_OFFLINE / HF_HUB_OFFLINE)", config_key)
    try:
        return _fetch_url(entry, path)
    except WeightsChecksumError:
        raise
    except (urllib.error.URLError, OSError, zipfile.BadZipFile) as error:
        reason = getattr(error, "reason", None) or error
        raise _missing(entry, path, f"downloading {entry.url} failed ({reason})", config_key) from None


def ensure(name: str, config_key: str | None = None) -> Path:
    """The cached file of ``name``, fetched first if needed.

    Under DDP, local rank 0 downloads: the other ranks give it a head start (Lightning's launcher starts them only
    after rank 0 built its modules; torchrun starts all at once), then queue on the download lock and find the file
    rank 0 wrote. If rank 0 could not get it, each rank fails the same way instead of waiting for nothing."""
    entry = source(name)
    if entry.cache != "hf" and _local_rank() != 0 and not offline() and not destination(entry).exists():
        time.sleep(float(os.environ.get("GSLRM_WEIGHTS_RANK_HEAD_START_S", "2")))
    return fetch(name, config_key)


def verify(name: str) -> tuple[Path, bool, str]:
    """(path, present, state) for ``status``: state is 'ok', 'checksum mismatch', 'no published checksum' or
    'missing'."""
    entry = source(name)
    path = destination(entry)
    if entry.cache == "hf":
        _, filename = split_hf(entry.url)
        found = sorted(path.glob(f"snapshots/*/{filename}"))
        if not found:
            return path / "snapshots" / "*" / filename, False, "missing"
        return found[-1], True, "cached by huggingface_hub (verified on download)"
    if not path.exists():
        return path, False, "missing"
    if entry.checksum is None or path.is_dir():
        return path, True, "present (no published checksum)"
    hasher, expected = _hasher(entry.checksum)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return path, True, "checksum ok" if hasher.hexdigest().startswith(expected) else "CHECKSUM MISMATCH"
