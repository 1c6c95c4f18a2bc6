"""Which wsis count as idle suspects, and after how long.

Idle is a heuristic: websockets may legitimately live for days, so they are exempt by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from mypy_extensions import mypyc_attr

from lwsobs.core.roles import Role

NS: Final = 1_000_000_000

# aiohttp closes idle keep-alive connections after 3630 s and lws after keepalive_timeout (5 s by
# default); a connection idle well past both is suspicious. None means exempt.
DEFAULT_IDLE_LIMITS_S: Mapping[Role, float | None] = {
    Role.LISTEN: None,
    Role.H1_SERVER: 3900.0,
    Role.H2_SERVER: 3900.0,
    Role.H2_STREAM: 600.0,
    Role.WS_SERVER: None,
    Role.H1_CLIENT: 3900.0,
    Role.H2_CLIENT: 3900.0,
    Role.WS_CLIENT: None,
    Role.RAW: None,
    Role.INTERNAL: None,
}


@mypyc_attr(allow_interpreted_subclasses=True)  # a test counts its lookups
@dataclass(frozen=True)
class LeakPolicy:
    """Per-role idle limits in seconds; a role mapped to None is never an idle suspect."""

    idle_limits_s: Mapping[Role, float | None] = field(
        default_factory=lambda: dict(DEFAULT_IDLE_LIMITS_S)
    )

    def idle_limit_ns(self, role: Role) -> int | None:
        limit = self.idle_limits_s.get(role)
        return None if limit is None else int(limit * NS)

    def with_limits(self, overrides: Mapping[Role, float | None]) -> LeakPolicy:
        merged = dict(self.idle_limits_s)
        merged.update(overrides)
        return LeakPolicy(merged)


def parse_idle_limits(text: str) -> dict[Role, float | None]:
    """Parse 'h1-server=10,ws-server=off' into overrides; raises ValueError with the culprit."""
    out: dict[Role, float | None] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"idle limit {item!r} is not ROLE=SECONDS")
        try:
            role = Role(name.strip())
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise ValueError(f"unknown role {name.strip()!r} (known: {known})") from None
        value = value.strip().lower()
        if value in ("off", "none", "never"):
            out[role] = None
            continue
        try:
            seconds = float(value)
        except ValueError:
            raise ValueError(
                f"idle limit for {role} must be seconds or 'off', got {value!r}"
            ) from None
        if not seconds > 0:
            raise ValueError(f"idle limit for {role} must be positive, got {seconds}")
        if seconds == float("inf"):
            raise ValueError(f"idle limit for {role} must be finite, got {seconds} (use 'off')")
        out[role] = seconds
    return out
