"""Assemble the status page: a server-rendered first view, then the script keeps it fresh.

Everything the server writes into the page goes through html.escape; the inline script and
stylesheet are allowed by their hashes in a Content-Security-Policy that permits nothing
else (no other script, no external asset, fetches only to lwsobs itself).
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Any

from lwsobs.app.status.script import JS
from lwsobs.app.status.snapshot import status_json
from lwsobs.app.status.style import CSS
from lwsobs.observer import Observer


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_sha256(JS)}; style-src {_sha256(CSS)}; "
    "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

_WSI_COLUMNS = (  # (JSON key, header, sortable, numeric)
    ("id", "wsi", False, False),
    ("role", "role", True, False),
    ("source", "source", True, False),
    ("age_s", "age", True, True),
    ("idle_s", "idle", False, True),
    ("transactions", "transactions", True, True),
    ("peer", "peer", True, False),
    ("suspect", "state", False, False),
)

_LEAK_COLUMNS = (
    "wsi",
    "role",
    "source",
    "rule",
    "certainty",
    "flagged after",
    "age",
    "state",
    "peer",
)


def _roles_html(status: dict[str, Any]) -> tuple[str, str]:
    """The first view of the role cards and the role x source table, before any refresh."""
    cards = (
        "".join(
            f'<div class="role-card" data-role="{escape(e["role"])}">'
            f'<div class="role-name">{escape(e["role"])}</div>'
            f'<span class="role-count" data-count="{e["live"]}">{e["live"]}</span></div>'
            for e in status["roles"]
        )
        or '<p class="muted">no wsis seen yet</p>'
    )
    sources = status["sources"]
    head = "".join(f'<th class="num">{escape(s)}</th>' for s in sources)
    rows = "".join(
        f"<tr><td>{escape(e['role'])}</td>"
        + "".join(f'<td class="num">{e["sources"].get(s, 0)}</td>' for s in sources)
        + f'<td class="num">{e["live"]}</td></tr>'
        for e in status["roles"]
    )
    table = f"<thead><tr><th>role</th>{head}<th class=num>total</th></tr></thead>"
    return cards, f"{table}<tbody>{rows}</tbody>"


def _wsi_head() -> str:
    cells = []
    for key, label, sortable, numeric in _WSI_COLUMNS:
        flags = ("sortable" if sortable else "", "num" if numeric else "")
        classes = " ".join(c for c in flags if c)
        attrs = f' class="{classes}"' if classes else ""
        if sortable:
            attrs += f' data-key="{key}" title="sort by {label}"'
        cells.append(f"<th{attrs}>{escape(label)}</th>")
    return "".join(cells)


def render_page(observer: Observer, now: int) -> str:
    status = status_json(observer, now)
    cards, table = _roles_html(status)
    leak_head = "".join(f"<th>{escape(c)}</th>" for c in _LEAK_COLUMNS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lwsobs status</title>
<style>{CSS}</style></head>
<body>
<header><h1>lwsobs</h1>
<span><span id="live-total">{status["live_total"]}</span> live wsis</span>
<span id="updated">server view; refreshing</span>
<nav><a href="/metrics">/metrics</a><a href="/api/wsis">/api/wsis</a>
<a href="/api/leaks">/api/leaks</a><a href="/api/connections">/api/connections</a>
<a href="/api/traces">/api/traces</a></nav></header>
<div id="error" role="alert"></div>
<main>
<section id="roles-section"><h2>Live wsis by role</h2>
<div id="roles">{cards}</div>
<table id="role-sources">{table}</table></section>
<section id="leaks-section"><h2>Flagged leaks <span id="leak-count"></span></h2>
<div class="scroll"><table id="leaks"><thead><tr>{leak_head}</tr></thead>
<tbody id="leaks-body"><tr><td class="muted" colspan="9">loading</td></tr></tbody>
</table></div></section>
<section id="waterfall-section"><h2>Recent connections</h2>
<div class="toolbar"><label><input type="checkbox" id="fit"> fit each connection</label>
<span class="legend"><span class="wf-conn-key"></span>connection
<span class="wf-queue-key"></span>queue wait (pipelined)
<span class="wf-work-key"></span>transaction
<span class="wf-leak-key"></span>flagged leak</span></div>
<div id="waterfall"><p class="muted">loading</p></div></section>
<section id="wsis-section"><h2>Live wsis <span class="muted" id="wsis-shown"></span></h2>
<div class="scroll"><table id="wsis"><thead><tr>{_wsi_head()}</tr></thead>
<tbody id="wsis-body"></tbody></table></div></section>
</main>
<noscript><p>This page refreshes with JavaScript; the JSON behind it is linked above.</p>
</noscript>
<script>{JS}</script>
</body></html>
"""
