// A tiny polling dashboard: no charting library, a canvas line chart is all it needs.
"use strict";
const POLL_MS = 1000, KEEP = 120;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const history = { server: {}, wait: {}, workers: {} };  // series name -> [values]
let polls = 0;

function push(group, name, value) {
  const s = (group[name] = group[name] || []);
  s.push(value);
  if (s.length > KEEP) s.shift();
}

function draw(canvasId, series, legendId) {
  const c = document.getElementById(canvasId);
  if (!c) return;
  const g = c.getContext("2d"), w = c.width, h = c.height, pad = 28;
  g.clearRect(0, 0, w, h);
  const names = Object.keys(series);
  let max = 1;
  for (const n of names) for (const v of series[n]) if (v > max) max = v;
  g.strokeStyle = "#ccc"; g.fillStyle = "#666"; g.font = "18px sans-serif";
  g.beginPath(); g.moveTo(pad, 4); g.lineTo(pad, h - pad); g.lineTo(w - 4, h - pad); g.stroke();
  g.fillText(String(Math.round(max)), 2, 18); g.fillText("0", 2, h - pad);
  names.forEach((n, i) => {
    const s = series[n];
    g.strokeStyle = COLORS[i % COLORS.length]; g.lineWidth = 2.5; g.beginPath();
    s.forEach((v, x) => {
      const px = pad + (x / (KEEP - 1)) * (w - pad - 4), py = h - pad - (v / max) * (h - pad - 8);
      x ? g.lineTo(px, py) : g.moveTo(px, py);
    });
    g.stroke();
  });
  if (legendId) {
    document.getElementById(legendId).innerHTML = names.map((n, i) =>
      `<span><i style="background:${COLORS[i % COLORS.length]}"></i>${n}: ${series[n][series[n].length - 1]}</span>`).join("");
  }
}

function workerCard(pid) {
  let card = document.getElementById("w-" + pid);
  if (!card) {
    card = document.createElement("div");
    card.className = "card"; card.id = "w-" + pid;
    card.innerHTML = `<h2>Worker ${pid}</h2><canvas id="wc-${pid}" width="860" height="320"></canvas>` +
      `<div class="legend" id="wl-${pid}"></div>`;
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
    polls += 1;
    const sv = d.server || {};
    push(history.server, "pooled", sv.pooled || 0);
    push(history.server, "per-request", sv.per_request || 0);
    push(history.server, "all clients", sv.total || 0);
    draw("server", history.server, "server-legend");
    for (const w of d.workers) {
      const s = w.stats, pid = w.pid;
      workerCard(pid);
      const hs = (history.workers[pid] = history.workers[pid] || {});
      push(hs, "in_use", s.in_use); push(hs, "idle", s.idle); push(hs, "waiting", s.waiting);
      draw("wc-" + pid, hs, "wl-" + pid);
      push(history.wait, "worker " + pid, s.wait_p99_ms);
    }
    draw("wait", history.wait, "wait-legend");
    // A report whose connection came back says so, instead of sitting there as if still leaked;
    // the user's own frames first, framework frames collapsed (the server formats them so).
    document.getElementById("leaks").innerHTML = d.leaks.length ? d.leaks.slice(-5).map(l => {
      const state = l.returned ? `returned after ${l.returned_after}s` : l.reclaimed ? "reclaimed" : "still out";
      const cls = l.returned ? "leak returned" : "leak";
      return `<pre class="${cls}" data-state="${l.returned ? "returned" : l.reclaimed ? "reclaimed" : "out"}">` +
        `worker ${l.worker}: <b>${state}</b> · ${escapeHtml(l.summary || l.borrow_site)}\n` +
        `held ${l.held_for}s by ${escapeHtml(l.thread_name)}\nborrowed at:\n` +
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
