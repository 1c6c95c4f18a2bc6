"""What an lws wsi tag says a wsi is (libwebsockets 4.2 and later name every wsi).

lws tags each wsi as `[<group>|<counter>|<detail>]` (with a pid first when built with the
secure-streams proxy). The group says what lws created: `wsicli` a client, `wsisrv` an accepted
connection, `mux` an h2 stream, and plain `wsi` with `listen|...` a listen socket (`pipe` the
event pipe). A WSI_DESTROY for a pointer the decoder never saw is classified by it: lws 4.5 and
5.0 end some clients with nothing but that destroy, and 4.1.6 sends no tags at all.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class TagKind(StrEnum):
    """The kinds of wsi a tag can name; the decoder maps each to a role."""

    CLIENT = "client"
    ACCEPTED = "accepted"
    STREAM = "stream"
    LISTEN = "listen"
    INTERNAL = "internal"


_GROUPS: Final = {
    "wsicli": TagKind.CLIENT,
    "wsiSScli": TagKind.CLIENT,  # a secure-streams client connection
    "wsisrv": TagKind.ACCEPTED,
    "mux": TagKind.STREAM,
}


def tag_kind(tag: str | None) -> TagKind | None:
    """The kind a tag names, or None when there is no tag or it says nothing known."""
    if not tag:
        return None
    parts = tag.strip("[]").split("|")
    for i, part in enumerate(parts[:2]):  # the group is first, or second after a pid
        kind = _GROUPS.get(part)
        if kind is not None:
            return kind
        if part == "wsi":
            detail = parts[i + 2] if len(parts) > i + 2 else ""
            if detail == "listen":
                return TagKind.LISTEN
            return TagKind.INTERNAL if detail == "pipe" else None
    return None
