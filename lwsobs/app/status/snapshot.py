"""Live wsi counts by role and source, read from the Tracker's table the way /metrics reads it."""

from __future__ import annotations

from typing import Any

from lwsobs.core.roles import Role
from lwsobs.observer import Observer

_ROLE_ORDER = {role.value: i for i, role in enumerate(Role)}


def live_counts(observer: Observer) -> dict[tuple[str, str], tuple[int, int]]:
    """(source, role) -> (live, suspects), with every pair ever seen (at 0 once empty).

    The same pairs and numbers as lwsobs_wsi_live and lwsobs_wsi_leak_suspects.
    """
    metrics = observer.metrics
    tracker = observer.tracker
    seen = {(source, role.value) for source, role in metrics.created}
    seen.update((source, to.value) for source, _, to in metrics.upgrades)
    live = dict.fromkeys(seen, 0)
    suspects = dict.fromkeys(seen, 0)
    for ctx in tracker.contexts:
        for role, wsis in ctx.live.items():
            key = (ctx.source, role.value)
            live[key] = live.get(key, 0) + len(wsis)
    for ctx, by_role in tracker.suspects.items():
        for role, wsis in by_role.items():
            key = (ctx.source, role.value)
            suspects[key] = suspects.get(key, 0) + len(wsis)
    return {key: (live.get(key, 0), suspects.get(key, 0)) for key in live.keys() | suspects}


def roles_json(observer: Observer) -> list[dict[str, Any]]:
    """One entry per role seen: live and suspect totals and the live count per source."""
    by_role: dict[str, dict[str, Any]] = {}
    for (source, role), (live, suspects) in sorted(live_counts(observer).items()):
        entry = by_role.setdefault(role, {"role": role, "live": 0, "suspects": 0, "sources": {}})
        entry["live"] += live
        entry["suspects"] += suspects
        entry["sources"][source] = live
    return sorted(by_role.values(), key=lambda e: _ROLE_ORDER.get(e["role"], len(_ROLE_ORDER)))


def status_json(observer: Observer, now: int) -> dict[str, Any]:
    """What the page's header and role section show; cheap: O(contexts x roles)."""
    roles = roles_json(observer)
    sources = sorted({source for entry in roles for source in entry["sources"]})
    return {
        "time_ms": now / 1e6,
        "live_total": sum(entry["live"] for entry in roles),
        "roles": roles,
        "sources": sources,
        "flagged": len(observer.live.leaks),
        "waterfall": observer.connections is not None,
        "jaeger_ui": observer.config.jaeger_ui,
    }
