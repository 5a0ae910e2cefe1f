"""Records that carry a SHA-256 of their own content, checked on every read.

The job trusts what it wrote earlier (recovery units, training metrics, checkpoint metadata) only
if the content still matches the digest written with it: a file edited by hand, truncated, bit-
flipped or copied from another run is told apart from the one this project wrote. The digest
detects damage, not an adversary who recomputes it (docs/security.md: the run folder is trusted).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict

from common import inputs
from common.files import PathLike, atomic_write_json

DIGEST_KEY = "sha256"


class RecordError(ValueError):
    """A record without its digest (an older version wrote it) or whose content no longer matches it."""


def canonical_json(data: Any) -> str:
    """One spelling per value: sorted keys, no spaces (tuples and lists alike)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def short_digest(data: Any) -> str:
    """A stable 16-hex-digit name for settings (which spec, which inputs), not for content checks."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:16]


def sha256_bytes(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def sha256_file(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal(record: Dict[str, Any]) -> Dict[str, Any]:
    """``record`` with the digest of its content (every other key) under DIGEST_KEY."""
    content = {k: v for k, v in record.items() if k != DIGEST_KEY}
    return dict(content, **{DIGEST_KEY: sha256_bytes(canonical_json(content).encode())})


def unseal(record: Any) -> Dict[str, Any]:
    """The content of a sealed record; RecordError if it is not one or does not match its digest."""
    if not isinstance(record, dict):
        raise RecordError(f"not a JSON object (a {type(record).__name__})")
    if not isinstance(record.get(DIGEST_KEY), str):
        raise RecordError(f"no content digest ('{DIGEST_KEY}'): written by an older version or not by csgm")
    content = {k: v for k, v in record.items() if k != DIGEST_KEY}
    if sha256_bytes(canonical_json(content).encode()) != record[DIGEST_KEY]:
        raise RecordError("its content does not match its digest (edited, damaged or copied from elsewhere)")
    return content


def is_number(value: Any) -> bool:
    """A JSON number read back: int or float, not a bool (``True`` is an int in Python)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_count(value: Any, least: int = 0) -> bool:
    """A whole JSON number >= ``least`` (not a bool, not 2.0)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def write_sealed_json(path: PathLike, record: Dict[str, Any]) -> None:
    atomic_write_json(path, seal(record))


def read_sealed_json(path: PathLike) -> Dict[str, Any]:
    """A sealed record's content. OSError if it cannot be read (FileNotFoundError: absent);
    RecordError, starting with the path, if it is not a regular file of at most RECORD_BYTES of
    strict JSON (common.inputs), or not intact."""
    try:
        return unseal(inputs.read_json(path, inputs.RECORD_BYTES, "record"))
    except inputs.InputError as e:
        raise RecordError(f"{path}: {e.problem}") from None
    except RecordError as e:
        raise RecordError(f"{path}: {e}") from None
