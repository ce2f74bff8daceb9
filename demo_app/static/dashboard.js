// A tiny polling dashboard: no charting library, a canvas line chart is all it needs.
// The history is the server's (each worker keeps per-second points), so the page shows the
// last minutes as soon as it opens; each poll redraws the window ending at the server's now.
"use strict";
const POLL_MS = 1000, WINDOW_S = 120;
// Colour says what a line means: warm for trouble (waiting, timeouts, refusals ahead), blue for
// work being done, neutral grey for spare capacity. Dashed: the per-second peak; solid: the mean.
const MEANING = {
  "in use, peak": "#1f77b4", "in use, mean": "#1f77b4", "waiting, peak": "#e8590c", "waiting, mean": "#e8590c",
  "timeouts/s": "#c92a2a", "pooled": "#1f77b4", "per-request": "#e8590c", "all clients": "#343a40",
};
const DASHED = new Set(["in use, peak", "waiting, peak"]);
const workerIndex = {};
let polls = 0;

// [[time ms, value]] of one field of per-second points ({t: epoch seconds, ...}).
function series(points, key) {
  return points.map(p => [p.t * 1000, p[key]]);
}

function niceStep(max) {
  const raw = max / 4, mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
  return [1, 2, 5, 10].map(m => m * mag).find(st => st >= raw) || mag * 10;
}

// A line chart on a canvas: clock-time labels on x (a full WINDOW_S window from the first poll),
// y ticks, and reference lines (dashed, labelled) such as max_size or the server's limit.
function draw(canvasId, series, legendId, refs, now) {
  const c = document.getElementById(canvasId);
  if (!c) return;
  const g = c.getContext("2d"), w = c.width, h = c.height, left = 56, bottom = 34, top = 10, right = 10;
  g.clearRect(0, 0, w, h);
  const t1 = now, t0 = t1 - WINDOW_S * 1000;  // the window ends now: the right edge is the present
  const names = Object.keys(series);
  let max = 1;
  for (const n of names) for (const [, v] of series[n]) if (v > max) max = v;
  for (const r of refs) if (r.value > max) max = r.value;
  const step = niceStep(max * 1.1), ymax = Math.ceil((max * 1.1) / step) * step;
  const X = t => left + ((t - t0) / (t1 - t0)) * (w - left - right);
  const Y = v => h - bottom - (v / ymax) * (h - bottom - top);
  g.font = "16px sans-serif"; g.lineWidth = 1;
  for (let v = 0; v <= ymax + 1e-9; v += step) {  // y ticks and grid
    g.strokeStyle = "#eee"; g.beginPath(); g.moveTo(left, Y(v)); g.lineTo(w - right, Y(v)); g.stroke();
    g.fillStyle = "#555"; g.textAlign = "right"; g.fillText(String(Math.round(v * 10) / 10), left - 6, Y(v) + 5);
  }
  for (let k = 0; k <= 4; k++) {  // time labels; the outer two aligned inwards, so none is cut off
    const t = t0 + (k / 4) * (t1 - t0);
    g.textAlign = k === 0 ? "left" : k === 4 ? "right" : "center";
    g.fillText(new Date(t).toLocaleTimeString([], { hour12: false }), X(t), h - 10);
  }
  g.strokeStyle = "#999"; g.beginPath(); g.moveTo(left, top); g.lineTo(left, h - bottom); g.lineTo(w - right, h - bottom); g.stroke();
  g.textAlign = "left";
  for (const r of refs) {  // reference lines
    g.strokeStyle = r.color; g.setLineDash([8, 6]); g.lineWidth = 2;
    g.beginPath(); g.moveTo(left, Y(r.value)); g.lineTo(w - right, Y(r.value)); g.stroke(); g.setLineDash([]);
    g.fillStyle = r.color; g.fillText(`${r.label} = ${r.value}`, left + 6, Y(r.value) - 6);
  }
  c.dataset.refs = refs.map(r => `${r.label}=${r.value}`).join(";");
  names.forEach(n => {
    g.strokeStyle = MEANING[n] || "#666"; g.lineWidth = 2.5; g.setLineDash(DASHED.has(n) ? [6, 4] : []);
    g.beginPath();
    series[n].filter(([t]) => t >= t0).forEach(([t, v], k) => (k ? g.lineTo(X(t), Y(v)) : g.moveTo(X(t), Y(v))));
    g.stroke(); g.setLineDash([]);
  });
  if (legendId) {  // a swatch drawn as its line: solid, or dashed for peaks and reference lines
    const swatch = (color, dashed) => dashed
      ? `<i style="height:0;border-top:3px dashed ${color};vertical-align:middle"></i>`
      : `<i style="background:${color}"></i>`;
    document.getElementById(legendId).innerHTML = names.map(n =>
      `<span>${swatch(MEANING[n] || "#666", DASHED.has(n))}${n}: ${series[n].length ? series[n][series[n].length - 1][1] : ""}</span>`
    ).join("") + refs.map(r => `<span>${swatch(r.color, true)}${r.label}: ${r.value}</span>`).join("");
  }
}

function workerCard(pid) {
  let card = document.getElementById("w-" + pid);
  if (!card) {
    workerIndex[pid] = Object.keys(workerIndex).length + 1;
    card = document.createElement("div");
    card.className = "card"; card.id = "w-" + pid;
    card.innerHTML = `<h2>Worker ${workerIndex[pid]} (pid ${pid}): its pool</h2>` +
      `<canvas id="wc-${pid}" width="860" height="320"></canvas><div class="legend" id="wl-${pid}"></div>`;
    document.getElementById("workers").appendChild(card);
  }
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"]/g, ch => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[ch]));
}

async function poll() {
  try {
    const r = await fetch("/api/dashboard", { cache: "no-store" });
    const d = await r.json();
    const now = (d.now || Date.now() / 1000) * 1000;  // the server's clock, as its points
    polls += 1;
    const sv = d.server || {}, sh = d.server_history || [];
    const server = { "pooled": series(sh, "pooled"), "per-request": series(sh, "per_request"),
                     "all clients": series(sh, "total") };
    const serverRefs = sv.refusal_line ? [{ label: "server refuses above", value: sv.refusal_line, color: "#c92a2a" }] : [];
    draw("server", server, "server-legend", serverRefs, now);
    for (const w of d.workers) {
      const s = w.stats, pid = w.pid, h = w.history || [];
      workerCard(pid);
      const lines = { "in use, peak": series(h, "in_use_peak"), "in use, mean": series(h, "in_use_mean"),
                      "waiting, peak": series(h, "waiting_peak"), "waiting, mean": series(h, "waiting_mean"),
                      "timeouts/s": series(h, "timeouts") };
      draw("wc-" + pid, lines, "wl-" + pid, [{ label: "max_size", value: s.max_size, color: "#1f77b4" }], now);
    }
    // A report whose connection came back says so, instead of sitting there as if still leaked;
    // the user's own frames first, framework frames collapsed (the server formats them so).
    document.getElementById("leaks").innerHTML = d.leaks.length ? d.leaks.slice(-5).map(l => {
      const state = l.returned ? `returned after ${Number(l.returned_after).toFixed(1)} s` : l.reclaimed ? "reclaimed" : "still out";
      const cls = l.returned ? "leak returned" : "leak";
      return `<pre class="${cls}" data-state="${l.returned ? "returned" : l.reclaimed ? "reclaimed" : "out"}">` +
        `worker ${l.worker}: <b>${state}</b> · ${escapeHtml(l.summary || l.borrow_site)}\n` +
        `held ${Number(l.held_for).toFixed(1)} s by ${escapeHtml(l.thread_name)} when reported\nborrowed at:\n` +
        `${escapeHtml(l.borrow_stack || "  " + l.borrow_site)}\nholder then:\n${escapeHtml(l.holder_stack)}</pre>`;
    }).join("") : "none";
    document.getElementById("status").textContent =
      `polls: ${polls} · workers: ${d.workers.length} · server max_connections: ${sv.max_connections ?? "?"}`;
  } catch (e) {
    document.getElementById("status").textContent = "poll failed: " + e;
  }
}
poll();
setInterval(poll, POLL_MS);
