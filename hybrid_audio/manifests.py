"""Message manifests as bytes: one serializer, and the part of a manifest that is mirrored.

A message's manifest is a JSON file beside its WAV (shared/DESIGN.md "Manifests"); later
additions — deliveries (`delivery`) — are written into it, never into the master WAV. Those
additions describe files *this machine* derived from the master (a cache: any machine can
derive them again), so the bucket mirrors the manifest as the Assembler wrote it, without
them: adding an MP3 here never makes the bucket's copy look changed, and a pull never calls
a local manifest that merely gained deliveries a conflict.
"""

from __future__ import annotations

import json
from typing import Any

#: Sections a machine adds to a manifest after assembly; not mirrored.
LOCAL_SECTIONS = ("deliveries",)


def manifest_bytes(document: dict[str, Any]) -> bytes:
    """The manifest file's bytes. Compact JSON: an indented dump takes Python's slow encoder
    and doubles the cost of an assembly; `python -m json.tool` makes it readable. (A
    document is a tree of fresh dicts and lists: no cycle to look for, ~8 % of the dump.)"""
    return json.dumps(document, ensure_ascii=False, check_circular=False).encode()


def mirrored_manifest(data: bytes) -> bytes:
    """The bytes of a manifest file as the bucket holds them: without `LOCAL_SECTIONS`.

    A manifest without them is returned as it is (no parse: the usual case, and the bytes
    the Assembler wrote); one with them is re-serialized without them, which gives back
    exactly the Assembler's bytes, since sections are appended after its keys.
    """
    if not any(f'"{section}"'.encode() in data for section in LOCAL_SECTIONS):
        return data
    document = json.loads(data)
    if not isinstance(document, dict) or not any(s in document for s in LOCAL_SECTIONS):
        return data  # the word appeared inside a value, not as a section
    return manifest_bytes({k: v for k, v in document.items() if k not in LOCAL_SECTIONS})
