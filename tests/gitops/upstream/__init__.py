"""Upstream files vendored for checks where the real tool cannot run; each folder has SOURCE, SHA256SUMS."""

from __future__ import annotations

import hashlib
from pathlib import Path

UPSTREAM = Path(__file__).parent


def checksums(project: str) -> dict[str, str]:
    """file name -> sha256, as the project's SHA256SUMS records them."""
    lines = (UPSTREAM / project / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    return {name.lstrip("*"): digest for digest, name in (line.split(maxsplit=1) for line in lines if line)}


def vendored(project: str, name: str) -> str:
    """The text of a vendored file; a file whose bytes differ from its recorded checksum fails the test."""
    data = (UPSTREAM / project / name).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert digest == checksums(project)[name], f"{project}/{name} differs from its SHA256SUMS entry"
    return data.decode("utf-8")
