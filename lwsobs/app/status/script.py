"""The status page's script, inlined into the page.

It fetches the JSON endpoints every two seconds and rebuilds each section with
createElement/textContent only: no data ever goes through innerHTML, so a request path or a
source name is always shown as text. Links to Jaeger are built only from an http(s) base URL
and a 32-hex trace id.
"""

JS = r"""
"use strict";
(() => {
  const REFRESH_MS = 2000;
  const HISTORY = 60;
  const WATERFALL_ROWS = 40;
  const MAX_ROW_MS = 60000;
  const SVGNS = "http://www.w3.org/2000/svg";
  const TRACE_ID = /^[0-9a-f]{32}$/;
  const history = new Map();
  const sort = { key: "age_s", dir: -1 };
  let lastWsis = { count: 0, wsis: [] };
  let lastConns = null;
  let refreshes = 0;

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) tr.appendChild(cell);
    return tr;
  }

  function td(text, cls) {
    return el("td", text === null || text === undefined ? "\u2014" : text, cls);
  }

  function seconds(s) {
    if (s === null || s === undefined) return "\u2014";
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function millis(ms) {
    return ms < 1000 ? ms.toFixed(ms < 10 ? 2 : 0) + " ms" : (ms / 1000).toFixed(2) + " s";
  }

  function safeBase(url) {
    if (typeof url !== "string" || !/^https?:\/\/[^\s"'<>`]+$/i.test(url)) return null;
    return url.replace(/\/+$/, "");
  }

  function traceLink(base, traceId, text) {
    if (!base || typeof traceId !== "string" || !TRACE_ID.test(traceId)) return null;
    const a = el("a", text, "trace-link");
    a.href = base + "/trace/" + traceId;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.title = "trace " + traceId + " in Jaeger";
    return a;
  }

  async function getJson(path) {
    const resp = await fetch(path, { cache: "no-store" });
    if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
    return resp.json();
  }

  // -- live wsis by role -------------------------------------------------------------------

  function sparkline(values) {
    const w = 140;
    const h = 30;
    const svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", String(w));
    svg.setAttribute("height", String(h));
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    const vals = values.length === 1 ? [values[0], values[0]] : values;
    const max = Math.max(1, ...vals);
    const step = w / (vals.length - 1);
    const points = vals.map((v, i) => {
      const x = step * i;
      const y = h - 2 - (v / max) * (h - 4);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    const line = document.createElementNS(SVGNS, "polyline");
    line.setAttribute("points", points.join(" "));
    svg.appendChild(line);
    const title = document.createElementNS(SVGNS, "title");
    title.textContent = "live count, last " + values.length + " refreshes: " + values.join(" ");
    svg.appendChild(title);
    return svg;
  }

  function renderRoles(status) {
    const cards = byId("roles");
    const fresh = [];
    for (const entry of status.roles) {
      const values = history.get(entry.role) || [];
      values.push(entry.live);
      while (values.length > HISTORY) values.shift();
      history.set(entry.role, values);
      const card = el("div", null, "role-card");
      card.dataset.role = entry.role;
      card.appendChild(el("div", entry.role, "role-name"));
      const count = el("span", entry.live, "role-count");
      count.dataset.count = String(entry.live);
      card.appendChild(count);
      if (entry.suspects > 0) {
        card.appendChild(el("span", entry.suspects + " suspect", "role-suspects"));
      }
      card.appendChild(sparkline(values));
      fresh.push(card);
    }
    if (!fresh.length) fresh.push(el("p", "no wsis seen yet", "muted"));
    cards.replaceChildren(...fresh);

    const table = byId("role-sources");
    const head = row([el("th", "role"), ...status.sources.map((s) => el("th", s, "num")),
      el("th", "total", "num")]);
    const body = status.roles.map((entry) => {
      const cells = [td(entry.role)];
      for (const source of status.sources) {
        const cell = td(entry.sources[source] ?? 0, "num");
        cell.dataset.role = entry.role;
        cell.dataset.source = source;
        cells.push(cell);
      }
      const total = td(entry.live, "num");
      total.dataset.role = entry.role;
      total.dataset.total = "1";
      cells.push(total);
      return row(cells);
    });
    const thead = document.createElement("thead");
    thead.appendChild(head);
    const tbody = document.createElement("tbody");
    tbody.replaceChildren(...body);
    table.replaceChildren(thead, tbody);
    byId("live-total").textContent = String(status.live_total);
  }

  // -- flagged leaks -----------------------------------------------------------------------

  function renderLeaks(data) {
    const shown = data.leaks.slice(0, 50);
    byId("leak-count").textContent = data.count ? "(" + data.count + ")" : "";
    const rows = shown.map((leak) => {
      const state = leak.resolved ? "resolved" : leak.live ? "live" : "gone";
      const tr = row([
        td(leak.id), td(leak.role), td(leak.source), td(leak.rule, "rule"),
        td(leak.certain ? "certain" : "suspect"), td(seconds(leak.flagged_age_s), "num"),
        td(seconds(leak.age_s), "num"), td(state), td(leak.peer),
      ]);
      tr.className = leak.certain ? "leak-certain" : "leak-suspect";
      tr.dataset.wsiId = leak.id;
      tr.dataset.rule = leak.rule;
      return tr;
    });
    if (!rows.length) {
      const cell = td("no wsi flagged", "muted");
      cell.colSpan = 9;
      rows.push(row([cell]));
    }
    byId("leaks-body").replaceChildren(...rows);
  }

  // -- waterfall of recent connections -----------------------------------------------------

  function niceStep(span) {
    const raw = span / 6;
    const pow = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (raw <= m * pow) return m * pow;
    return 10 * pow;
  }

  function pct(x) {
    return (Math.max(0, Math.min(100, x))).toFixed(3) + "%";
  }

  function methodOf(t) {
    return t.method ?? (t.error === "invalid_request" ? "(invalid request)" : "?");
  }

  function txnBar(t, c0, cspan, base, connTrace) {
    const end = t.end_ms ?? t.start_ms;
    const joined = t.trace_id !== connTrace ? traceLink(base, t.trace_id, null) : null;
    const bar = joined || el("div");
    bar.className = "wf-txn";
    if (t.status === null || t.status >= 500 || t.error) bar.classList.add("error");
    else if (t.status >= 400) bar.classList.add("client-error");
    bar.dataset.index = String(t.index);
    bar.style.left = pct(((t.arrived_ms - c0) / cspan) * 100);
    bar.style.width = pct(((end - t.arrived_ms) / cspan) * 100);
    // Pipelined requests arrive together, so their bars overlap: the queue wait is a thin
    // strip along the bottom and the handling a taller bar above it, both stay visible.
    const total = Math.max(end - t.arrived_ms, 1e-6);
    const work = el("div", null, "wf-work");
    work.style.left = "0%";
    if (t.pipelined) {
      bar.classList.add("pipelined");
      const queue = el("div", null, "wf-queue");
      queue.style.width = pct((t.queue_ms / total) * 100);
      work.style.left = queue.style.width;
      bar.appendChild(queue);
    }
    bar.appendChild(work);
    bar.title = methodOf(t) + " " + (t.path ?? "") + " \u2192 " +
      (t.status ?? t.error ?? "no status") + ", " + millis(end - t.arrived_ms) +
      (t.pipelined ? ", pipelined: queued " + millis(t.queue_ms) : "") + " (#" + t.index + ")";
    return bar;
  }

  function connLabel(c, base) {
    const label = el("div", null, "wf-label");
    const link = traceLink(base, c.trace_id, "trace");
    if (link) label.appendChild(link);
    label.appendChild(el("span", c.id + " " + c.role, "wf-id"));
    const n = c.transactions === 1 ? "1 txn" : c.transactions + " txns";
    label.appendChild(el("span", " \u00b7 " + n, "muted"));
    if (c.leak) {
      const badge = el("span", c.leak + (c.certain ? "" : " suspect"), "wf-badge");
      badge.dataset.rule = c.leak;
      label.appendChild(badge);
    }
    const last = c.txns[c.txns.length - 1];
    if (last) {
      const req = methodOf(last) + " " + (last.path ?? "") + " " +
        (last.status ?? last.error ?? "");
      label.appendChild(el("span", " " + req, "wf-req"));
    }
    const paths = c.txns.map((t) => methodOf(t) + " " + (t.path ?? ""));
    label.title = c.id + " " + c.role + " from " + (c.peer ?? "?") + "\n" + paths.join("\n");
    return label;
  }

  function renderWaterfall(data) {
    lastConns = data;
    const box = byId("waterfall");
    if (!data.enabled) {
      box.replaceChildren(el("p", "the waterfall needs spans on (LWSOBS_SPANS) and " +
        "LWSOBS_RECENT_CONNECTIONS above 0", "muted"));
      return;
    }
    const base = safeBase(data.jaeger_ui);
    const fit = byId("fit").checked;
    const now = data.time_ms;
    const conns = data.connections;
    if (!conns.length) {
      box.replaceChildren(el("p", "no connection has finished yet", "muted"));
      return;
    }
    // A long connection shows only its last MAX_ROW_MS, so one old keep-alive connection
    // does not squeeze every other row into a sliver.
    const shownStart = (c) => Math.max(c.start_ms, (c.end_ms ?? now) - MAX_ROW_MS);
    let t0 = now - 1000;
    for (const c of conns) t0 = Math.min(t0, shownStart(c));
    let t1 = now;
    for (const c of conns) t1 = Math.max(t1, c.end_ms ?? now);
    const span = Math.max(t1 - t0, 1);
    const out = [];
    const axis = el("div", null, "wf-axis");
    axis.appendChild(el("div", fit ? "each bar fitted to its connection" :
      "shared axis, " + millis(span), "muted"));
    const ticks = el("div", null, "wf-track");
    if (!fit) {
      const step = niceStep(span);
      for (let back = 0; back <= span; back += step) {
        const tick = el("div", back === 0 ? "now" : "-" + millis(back), "wf-tick");
        tick.style.left = pct(((t1 - back - t0) / span) * 100);
        ticks.appendChild(tick);
      }
    }
    axis.appendChild(ticks);
    out.push(axis);
    for (const c of conns) {
      const r = el("div", null, "wf-row");
      r.dataset.connId = c.id;
      r.dataset.transactions = String(c.transactions);
      if (c.leak) {
        r.classList.add("leaked");
        r.dataset.leak = c.leak;
      }
      if (c.live) r.classList.add("live");
      r.appendChild(connLabel(c, base));
      const track = el("div", null, "wf-track");
      const start = shownStart(c);
      const end = c.end_ms ?? now;
      const cspan = Math.max(end - start, 1e-6);
      const bar = el("div", null, "wf-conn");
      if (c.end_ms === null) bar.classList.add("live");
      if (start > c.start_ms) bar.classList.add("clipped");
      if (c.leak) bar.classList.add("leaked");
      bar.style.left = fit ? "0%" : pct(((start - t0) / span) * 100);
      bar.style.width = fit ? "100%" : pct(((end - start) / span) * 100);
      bar.title = c.id + " " + c.role + ", " + millis(end - c.start_ms) +
        (c.end_reason ? ", " + c.end_reason : c.end_ms === null ? ", live" : "") +
        (c.leak ? ", flagged " + c.leak : "") +
        (c.recorded < c.transactions ? ", showing the last " + c.txns.length + " of " +
          c.transactions + " transactions" : "");
      for (const t of c.txns) {
        if (t.arrived_ms < start) continue;
        bar.appendChild(txnBar(t, start, cspan, base, c.trace_id));
      }
      track.appendChild(bar);
      r.appendChild(track);
      out.push(r);
    }
    box.replaceChildren(...out);
  }

  // -- the live wsi table ------------------------------------------------------------------

  function compare(a, b) {
    const x = a[sort.key];
    const y = b[sort.key];
    if (x === y) return a.id < b.id ? -1 : 1;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * sort.dir;
  }

  function renderWsis(data) {
    lastWsis = data;
    const items = data.wsis.slice().sort(compare);
    const rows = items.map((w) => {
      const state = w.suspect ? "suspect: " + w.suspect : w.in_transaction ? "in transaction"
        : "";
      const tr = row([
        td(w.id), td(w.role), td(w.source), td(seconds(w.age_s), "num"),
        td(seconds(w.idle_s), "num"), td(w.transactions, "num"), td(w.peer), td(state),
      ]);
      tr.dataset.wsiId = w.id;
      tr.dataset.role = w.role;
      return tr;
    });
    byId("wsis-body").replaceChildren(...rows);
    byId("wsis-shown").textContent = items.length < data.count
      ? "showing " + items.length + " of " + data.count : String(data.count);
    for (const th of document.querySelectorAll("#wsis th[data-key]")) {
      const on = th.dataset.key === sort.key;
      th.setAttribute("aria-sort", on ? (sort.dir > 0 ? "ascending" : "descending") : "none");
      th.querySelector(".arrow").textContent = on ? (sort.dir > 0 ? " \u25b2" : " \u25bc") : "";
    }
  }

  function setupSorting() {
    for (const th of document.querySelectorAll("#wsis th[data-key]")) {
      th.appendChild(el("span", "", "arrow"));
      th.addEventListener("click", () => {
        const key = th.dataset.key;
        sort.dir = sort.key === key ? -sort.dir : (th.classList.contains("num") ? -1 : 1);
        sort.key = key;
        renderWsis(lastWsis);
      });
    }
  }

  // -- refresh loop ------------------------------------------------------------------------

  async function refresh() {
    try {
      const [status, wsis, leaks, conns] = await Promise.all([
        getJson("api/status"),
        getJson("api/wsis?limit=500"),
        getJson("api/leaks"),
        getJson("api/connections?limit=" + WATERFALL_ROWS),
      ]);
      renderRoles(status);
      renderLeaks(leaks);
      renderWaterfall(conns);
      renderWsis(wsis);
      refreshes += 1;
      document.body.dataset.refreshes = String(refreshes);
      document.body.classList.remove("offline");
      byId("updated").textContent = "updated " + new Date(status.time_ms).toLocaleTimeString();
    } catch (err) {
      document.body.classList.add("offline");
      byId("error").textContent = "lwsobs is not answering (" + err.message +
        "); retrying every " + REFRESH_MS / 1000 + " s";
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  setupSorting();
  byId("fit").addEventListener("change", () => {
    if (lastConns) renderWaterfall(lastConns);
  });
  refresh();
})();
"""
