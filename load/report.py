"""The comparison report: a summary table, PNG charts (matplotlib), report.md and report.html."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compare import Phase

COLORS = {"per-request": "#d62728", "pooled": "#1f77b4", "pgbouncer": "#2ca02c"}
HEAD = ["mode", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors %", "peak server conns", "conns opened", "ok req/s"]


def rows(phases: list[Phase]) -> list[list[str]]:
    return [
        [p.mode, f"{p.rps:.1f}", f"{p.p50:.0f}", f"{p.p95:.0f}", f"{p.p99:.0f}", f"{p.error_pct:.2f}",
         str(p.peak_conns), str(p.conns_opened), f"{p.ok_rps:.1f}"]
        for p in phases
    ]


def markdown_table(phases: list[Phase]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(phases)]
    return "\n".join(lines)


def ratio_line(phases: list[Phase]) -> str:
    by = {p.mode: p for p in phases}
    if "pooled" in by and "per-request" in by and by["per-request"].rps > 0:
        a, b = by["pooled"], by["per-request"]
        good = f"{a.ok_rps / b.ok_rps:.1f}x" if b.ok_rps else "inf"
        return (f"pooled / per-request: {a.rps / b.rps:.1f}x req/s, {good} successful req/s; p99 latency "
                f"{b.p99 / a.p99 if a.p99 else float('nan'):.1f}x lower pooled")  # fmt: skip
    return ""


def charts(out: Path, phases: list[Phase], meta: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[tuple[str, str]] = []

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        made.append((name, title))

    fig, ax = plt.subplots(figsize=(9, 4))
    for p in phases:
        ax.plot([h["t"] for h in p.history], [h["rps"] for h in p.history], label=p.mode, color=COLORS[p.mode])
    ax.set(xlabel="seconds", ylabel="requests/s", title="Throughput")
    ax.legend()
    save(fig, "rps.png", "Throughput over time")

    fig, ax = plt.subplots(figsize=(9, 4))
    for p in phases:
        pts = [h for h in p.history if h["p50"] > 0]  # Locust's window is empty at first
        for key, style in (("p50", ":"), ("p95", "--"), ("p99", "-")):
            ax.plot([h["t"] for h in pts], [h[key] for h in pts], style, color=COLORS[p.mode], label=f"{p.mode} {key}")
    ax.set(xlabel="seconds", ylabel="ms", title="Latency percentiles (log scale)", yscale="log")
    ax.legend(ncol=2, fontsize=8)
    save(fig, "latency.png", "Latency p50 / p95 / p99 over time")

    fig, ax = plt.subplots(figsize=(9, 4))
    for p in phases:
        ax.plot([h["t"] for h in p.history], [100.0 * h["fps"] / h["rps"] if h["rps"] else 0.0 for h in p.history],
                label=p.mode, color=COLORS[p.mode])  # fmt: skip
    ax.set(xlabel="seconds", ylabel="% of requests", title="Error rate")
    ax.legend()
    save(fig, "errors.png", "Error rate over time")

    fig, ax = plt.subplots(figsize=(9, 4))
    for p in phases:
        ax.plot([s["t"] for s in p.samples], [s["app_conns"] for s in p.samples], label=f"{p.mode} (app)",
                color=COLORS[p.mode])  # fmt: skip
    mc = meta.get("args", {}).get("max_connections")
    if mc and "embedded" in str(meta.get("server")):
        ax.axhline(mc, color="gray", linestyle="--", label=f"max_connections = {mc}")
    if any(p.mode == "pgbouncer" for p in phases):
        bps = meta.get("args", {}).get("bouncer_pool_size")
        ax.axhline(bps, color=COLORS["pgbouncer"], linestyle="-.", label=f"PgBouncer default_pool_size = {bps}")
    cap = meta.get("args", {}).get("workers", 0) * meta.get("args", {}).get("max_size", 0)
    if cap:
        ax.axhline(cap, color=COLORS["pooled"], linestyle=":", label=f"workers x max_size = {cap}")
    ax.set(xlabel="seconds", ylabel="connections", title="Server connections (pg_stat_activity)")
    ax.legend(fontsize=8)
    save(fig, "server_conns.png", "Server connections over time")
    return made


def write(out: Path, phases: list[Phase], meta: dict[str, Any]) -> str:
    """Write the charts, report.md and report.html into ``out``; return the terminal table."""
    imgs = charts(out, phases, meta) if phases else []
    table = markdown_table(phases)
    ratio = ratio_line(phases)
    a = meta["args"]
    setup = (f"{meta['server']}; gunicorn gthread {a['workers']} workers x {a['threads']} threads; pool max_size "
             f"{a['max_size']} per worker, timeout {a['pool_timeout']} s; Locust {a['users']} users "
             f"(spawn {a['spawn_rate']}/s), {a['duration']} s per phase, mix {a['mix']}; "
             f"{meta['cores']} cores, Python {meta['python']}")  # fmt: skip
    cpu_lines = [
        f"{p.mode}: " + ", ".join(f"{k} {v:.0f}%" for k, v in p.cpu.items()) for p in phases if p.cpu
    ]
    pool_lines = []
    for p in phases:
        for i, s in enumerate(p.pool_stats):
            pool_lines.append(
                f"worker {i}: borrows {s.get('borrows')}, waits {s.get('waits')}, timeouts {s.get('timeouts')}, "
                f"wait p99 {s.get('wait_p99_ms')} ms, size {s.get('size')}"
            )
    md = [
        "# threadpool_db: thread-per-request vs the bounded pool", "", setup, "", table, "", ratio, "",
        "How to read it:",
        "- **per-request** opens a server connection for every request: *conns opened* is about its request count,",
        "  and *peak server conns* follows concurrency until PostgreSQL refuses (`too many clients`, counted in",
        "  *errors %*).",
        "- **pooled** keeps at most workers x max_size server connections, opened once; extra demand waits in",
        "  the pool's queue (backpressure) or gets a 503 when the wait passes the pool timeout.",
        "",
    ]  # fmt: skip
    for p in phases:
        if p.mode == "pgbouncer":
            md += [f"Via PgBouncer: {p.clients} client connections from the app hosts' pools, "
                   f"PostgreSQL backends peaked at {p.peak_conns} "
                   f"(PgBouncer default_pool_size {meta['args'].get('bouncer_pool_size')}).", ""]  # fmt: skip
    if cpu_lines:
        md += ["CPU share of the whole machine during each phase (from /proc):", "",
               *[f"- {x}" for x in cpu_lines], ""]  # fmt: skip
    advice = next((p.advice for p in phases if p.advice.get("reasoning")), None)
    if advice:
        md += ["Sizing advisor (one pooled worker's view, `pool.advise()`):", "",
               *[f"- {x}" for x in advice["reasoning"] + advice.get("warnings", [])], ""]  # fmt: skip
    if pool_lines:
        md += ["Pool stats at the end of the pooled phase:", "", *[f"- {x}" for x in pool_lines], ""]
    md += [f"![{t}]({n})" for n, t in imgs]
    (out / "report.md").write_text("\n".join(md) + "\n")
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows(phases))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>threadpool_db comparison</title>
<style>body{{font:14px system-ui,sans-serif;margin:2rem;max-width:960px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}}td:first-child{{text-align:left}}</style>
</head><body><h1>thread-per-request vs the bounded pool</h1><p>{html.escape(setup)}</p>
<table><tr>{"".join(f"<th>{h}</th>" for h in HEAD)}</tr>{trs}</table><p><b>{html.escape(ratio)}</b></p>
<h3>CPU share during each phase</h3><ul>{"".join(f"<li>{html.escape(x)}</li>" for x in cpu_lines)}</ul>
<h3>Sizing advisor</h3><ul>{"".join(f"<li>{html.escape(x)}</li>" for x in
    ((advice or {}).get("reasoning", []) + (advice or {}).get("warnings", [])))}</ul>
<h3>Pool stats at the end of the pooled phase</h3>
<ul>{"".join(f"<li>{html.escape(x)}</li>" for x in pool_lines)}</ul>
{"".join(f'<h2>{html.escape(t)}</h2><img src="{n}" alt="{html.escape(t)}">' for n, t in imgs)}
</body></html>"""
    (out / "report.html").write_text(page)
    return "\n".join([table, ratio, *(f"CPU {x}" for x in cpu_lines)]).strip()
