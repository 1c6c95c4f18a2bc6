"""The status page's stylesheet, inlined into the page (no external assets)."""

CSS = """
:root { --fg: #1d2330; --muted: #667085; --line: #d9dee7; --bg: #f6f7f9; --card: #fff;
  --conn: #c9d7ee; --conn-live: #a9c4ec; --work: #2f6fd6; --queue: #f0a020;
  --leak: #d92d20; --ok: #12805c; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 16px; padding: 10px 18px;
  background: var(--fg); color: #fff; flex-wrap: wrap; }
header h1 { margin: 0; font-size: 18px; }
header nav a { color: #cfe0ff; margin-right: 10px; }
#updated { color: #cbd2dd; }
#error { display: none; background: var(--leak); color: #fff; padding: 6px 18px; }
body.offline #error { display: block; }
main { padding: 12px 18px; display: grid; gap: 14px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: 10px 14px; }
h2 { font-size: 15px; margin: 0 0 8px; }
.muted { color: var(--muted); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
th.sortable { cursor: pointer; user-select: none; }
th.sortable:hover { background: #eef2f8; }
.scroll { max-height: 420px; overflow: auto; }
#roles { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 10px; }
.role-card { border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px;
  min-width: 150px; }
.role-name { color: var(--muted); }
.role-count { font-size: 22px; font-weight: 600; }
.role-suspects { color: var(--leak); margin-left: 6px; }
.spark { display: block; margin-top: 2px; }
.spark polyline { fill: none; stroke: var(--work); stroke-width: 1.5; }
tr.leak-certain td.rule { color: var(--leak); font-weight: 600; }
tr.leak-suspect td.rule { color: #b54708; font-weight: 600; }
.toolbar { display: flex; gap: 16px; align-items: center; margin-bottom: 6px; }
.legend span { display: inline-block; width: 12px; height: 10px; margin: 0 4px 0 10px;
  vertical-align: middle; }
.wf-axis, .wf-row { display: grid; grid-template-columns: 420px 1fr; align-items: center; }
.wf-axis .wf-track { height: 18px; border-bottom: 1px solid var(--line); }
.wf-tick { position: absolute; top: 0; font-size: 11px; color: var(--muted);
  border-left: 1px solid var(--line); padding-left: 2px; height: 18px; }
.wf-row { border-bottom: 1px solid #eef0f4; min-height: 22px; }
.wf-row.leaked .wf-label { color: var(--leak); }
.wf-label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; padding-right: 8px; }
.wf-req { color: var(--muted); font-family: ui-monospace, monospace; font-size: 12px; }
.wf-label a { margin-right: 6px; }
.wf-badge { margin-left: 6px; padding: 0 4px; border-radius: 3px; background: var(--leak);
  color: #fff; font-size: 11px; }
.wf-track { position: relative; height: 18px; }
.wf-conn { position: absolute; top: 2px; height: 14px; min-width: 2px; background: var(--conn);
  border-radius: 2px; }
.wf-conn.live { background: var(--conn-live); border-right: 2px dashed var(--work); }
.wf-conn.leaked { background: #fbd5d1; outline: 2px solid var(--leak); }
.wf-conn.clipped { border-left: 2px dotted var(--muted); }
.legend .wf-conn-key { background: var(--conn); }
.legend .wf-queue-key { background: var(--queue); }
.legend .wf-work-key { background: var(--work); }
.legend .wf-leak-key { background: #fbd5d1; outline: 2px solid var(--leak); }
.wf-txn { position: absolute; top: 2px; height: 12px; min-width: 2px; }
.wf-queue { position: absolute; left: 0; bottom: 0; height: 4px; min-width: 2px;
  background: var(--queue); }
.wf-work { position: absolute; right: 0; top: 0; height: 8px; min-width: 2px;
  background: var(--work); }
.wf-txn.error .wf-work { background: var(--leak); }
.wf-txn.client-error .wf-work { background: #9e77ed; }
"""
