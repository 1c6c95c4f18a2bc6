"""The status page at GET /: one self-contained HTML page and the JSON it refreshes from.

`page` assembles the document (inline CSS and JS, no external assets), `snapshot` and
`waterfall` build the JSON behind /api/status and /api/connections.
"""

from lwsobs.app.status.page import CONTENT_SECURITY_POLICY, render_page
from lwsobs.app.status.snapshot import status_json
from lwsobs.app.status.waterfall import connections_json

__all__ = ["CONTENT_SECURITY_POLICY", "connections_json", "render_page", "status_json"]
