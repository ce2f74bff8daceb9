// A tiny polling dashboard: no charting library, a canvas line chart is all it needs.
"use strict";
const POLL_MS = 1000, WINDOW_S = 120;
// Colour says what a line means: warm for trouble (waiting, timeouts, refusals ahead), blue for
// work being done, neutral grey for spare capacity.
const MEANING = {
  "in use": "#1f77b4", "idle": "#9aa5b1", "waiting": "#e8590c", "timeouts/s": "#c92a2a",
  "pooled": "#1f77b4", "per-request": "#e8590c", "all clients": "#343a40",
};
const history = { server: {}, workers: {}, t0: Date.now() };  // series name -> [[time ms, value]]
const workerIndex = {};
let polls = 0;

function push(group, name, value, now) {
  const s = (group[name] = group[name] || []);
  s.push([now, value]);
  while (s.length && s[0][0] < now - WINDOW_S * 1000) s.shift();
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
  const t1 = Math.max(now, history.t0 + WINDOW_S * 1000), t0 = t1 - WINDOW_S * 1000;
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
  g.textAlign = "center";
  for (let k = 0; k <= 4; k++) {  // time labels
    const t = t0 + (k / 4) * (t1 - t0);
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
    g.strokeStyle = MEANING[n] || "#666"; g.lineWidth = 2.5; g.beginPath();
    series[n].forEach(([t, v], k) => (k ? g.lineTo(X(t), Y(v)) : g.moveTo(X(t), Y(v))));
    g.stroke();
  });
  if (legendId) {
    document.getElementById(legendId).innerHTML = names.map(n =>
      `<span><i style="background:${MEANING[n] || "#666"}"></i>${n}: ${series[n].length ? series[n][series[n].length - 1][1] : ""}</span>`
    ).join("") + refs.map(r => `<span><i style="background:${r.color}"></i>${r.label}: ${r.value}</span>`).join("");
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

const lastTimeouts = {};

async function poll() {
  try {
    const r = await fetch("/api/dashboard", { cache: "no-store" });
    const d = await r.json();
    const now = Date.now();
    polls += 1;
    const sv = d.server || {};
    push(history.server, "pooled", sv.pooled || 0, now);
    push(history.server, "per-request", sv.per_request || 0, now);
    push(history.server, "all clients", sv.total || 0, now);
    const serverRefs = sv.refusal_line ? [{ label: "server refuses above", value: sv.refusal_line, color: "#c92a2a" }] : [];
    draw("server", history.server, "server-legend", serverRefs, now);
    for (const w of d.workers) {
      const s = w.stats, pid = w.pid;
      workerCard(pid);
      const hs = (history.workers[pid] = history.workers[pid] || {});
      push(hs, "in use", s.in_use, now); push(hs, "idle", s.idle, now); push(hs, "waiting", s.waiting, now);
      const prev = lastTimeouts[pid] ?? s.timeouts;
      lastTimeouts[pid] = s.timeouts;
      push(hs, "timeouts/s", Math.max(0, s.timeouts - prev), now);
      draw("wc-" + pid, hs, "wl-" + pid, [{ label: "max_size", value: s.max_size, color: "#1f77b4" }], now);
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
