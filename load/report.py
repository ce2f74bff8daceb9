"""The comparison report: a summary table, PNG charts (matplotlib), report.md and report.html.

Both files are made from one list of sections, so the HTML has everything the markdown has.
Figures are rounded one way everywhere: req/s and milliseconds to 0.1, percentages to 0.01.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from .phase import Phase

COLORS = {"per-request": "#d62728", "pooled": "#1f77b4", "recommended": "#9467bd", "pgbouncer": "#2ca02c"}
HEAD = ["phase", "ok req/s", "p50 ms", "p95 ms", "p99 ms", "errors %", "peak server conns", "conns opened",
        "all req/s"]  # fmt: skip


def rows(phases: list[Phase]) -> list[list[str]]:
    return [
        [p.label or p.mode, f"{p.ok_rps:.1f}", f"{p.p50:.1f}", f"{p.p95:.1f}", f"{p.p99:.1f}", f"{p.error_pct:.2f}",
         str(p.peak_conns), str(p.conns_opened), f"{p.rps:.1f}"]
        for p in phases
    ]  # fmt: skip


def markdown_table(phases: list[Phase]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(phases)]
    return "\n".join(lines)


def ratio_line(phases: list[Phase]) -> str:
    """The headline: what users get. Successful requests per second and the p99 latency."""
    by = {p.mode: p for p in phases}
    if "pooled" in by and "per-request" in by:
        a, b = by["pooled"], by["per-request"]
        good = f"{a.ok_rps / b.ok_rps:.1f}x" if b.ok_rps else "all of the"
        lower = f" ({b.p99 / a.p99:.1f}x lower)" if a.p99 else ""
        return (f"pooled vs per-request: {good} successful req/s ({a.ok_rps:.1f} vs {b.ok_rps:.1f}); "
                f"p99 {a.p99:.1f} ms vs {b.p99:.1f} ms{lower}")  # fmt: skip
    return ""


def _pool_wait_p99(p: Phase) -> float | None:
    """The worst worker's p99 wait for a connection at the end of a pooled phase (ms)."""
    waits = [float(s.get("wait_p99_ms") or 0.0) for s in p.pool_stats]
    return max(waits) if waits else None


def recommended_line(phases: list[Phase], meta: dict[str, Any] | None = None) -> str:
    """Did the advisor's size do as well as the default? Every clause comes from what was
    measured in this run: the sizes, the goodput and p99 of both phases, the pool's own wait,
    the machine's cores and how busy they were, and the phases' lengths."""
    by = {p.mode: p for p in phases}
    if "pooled" not in by or "recommended" not in by:
        return ""
    meta = meta or {}
    d, r = by["pooled"], by["recommended"]
    verdict = (f"recommended max_size {r.max_size} vs default {d.max_size}: {r.ok_rps:.1f} vs {d.ok_rps:.1f} "
               f"ok req/s, p99 {r.p99:.1f} vs {d.p99:.1f} ms")  # fmt: skip
    if r.max_size == d.max_size:
        size_words = "the same size"
    else:
        fewer = "fewer" if r.max_size < d.max_size else "more"
        size_words = f"{fewer} connections ({r.max_size} vs {d.max_size} per worker)"
    worse_goodput = r.ok_rps < 0.95 * d.ok_rps
    worse_p99 = r.p99 > 1.10 * d.p99
    if r.max_size == d.max_size:  # the advice keeps the size: two runs of one configuration
        diff = 100.0 * (r.ok_rps - d.ok_rps) / d.ok_rps if d.ok_rps else 0.0
        return (f"{verdict}: the advice keeps the default size, so this phase re-runs the same configuration; "
                f"its {diff:+.1f}% goodput is the run-to-run spread on this machine")  # fmt: skip
    if not (worse_goodput or worse_p99):
        return f"{verdict}: as good as the default (within 5% on goodput and 10% on p99), with {size_words}"
    what = " and ".join(x for x, bad in (("goodput", worse_goodput), ("p99", worse_p99)) if bad)
    why = [f"WORSE on {what}, with {size_words}"]
    cores = meta.get("cores")
    idle = r.cpu.get("idle") if r.cpu else None
    if idle is not None and cores:
        busy = 100.0 - idle
        why.append(f"the machine's {cores} cores were {busy:.0f}% busy during it"
                   + (" (CPU-bound: app, Locust and PostgreSQL share them)" if busy >= 90 else ""))  # fmt: skip
    rw, dw = _pool_wait_p99(r), _pool_wait_p99(d)
    if rw is not None and dw is not None:
        if r.max_size < d.max_size and rw > dw:
            why.append(f"with fewer connections the requests waited longer in the pool (p99 wait {rw:.1f} vs "
                       f"{dw:.1f} ms)")  # fmt: skip
        elif r.max_size > d.max_size and rw <= dw:
            why.append(f"the extra connections did not shorten the pool wait (p99 {rw:.1f} vs {dw:.1f} ms): the "
                       "time went to the server or the CPU, not to waiting for a connection")  # fmt: skip
        else:
            why.append(f"pool wait p99 {rw:.1f} vs {dw:.1f} ms")
    dur = meta.get("args", {})
    if dur.get("recommended_duration") and dur.get("duration") and dur["recommended_duration"] < dur["duration"]:
        why.append(f"the check ran {dur['recommended_duration']} s against the default's {dur['duration']} s, so "
                   "warm-up weighs more in it")  # fmt: skip
    return f"{verdict}: " + "; ".join(why) + "."


def time_split_line(p: Phase, meta: dict[str, Any]) -> str:
    """A phase's response times split three ways: what clients saw (Locust), the app's own time
    (all its workers), and, of that, the wait for a pooled connection (bounded by the pool
    timeout). The rest was spent before the app: in the accept backlog and gunicorn's gthread
    queue, waiting for a free thread, which no pool timeout bounds."""
    app = p.request_times.get("app")
    if not app or not p.requests:
        return ""
    line = (f"{p.label}: clients saw p99 {p.p99:.1f} ms, max {p.max_ms:.1f} ms; inside the app p99 {app['p99']:.1f} "
            f"ms, max {app['max']:.1f} ms")  # fmt: skip
    wait = p.request_times.get("pool_wait")
    if wait and p.mode != "per-request":
        timeout = meta.get("args", {}).get("pool_timeout")
        bound = f" (the pool timeout, {timeout:g} s, bounds it)" if timeout else ""
        line += f", of which waiting for a connection p99 {wait['p99']:.1f} ms, max {wait['max']:.1f} ms{bound}"
    before = p.max_ms - app["max"]
    if before > 0:
        line += (f"; the slowest request spent about {before:.0f} ms before the app (accept backlog and gunicorn's "
                 "gthread queue, waiting for a free thread), which no pool timeout bounds")  # fmt: skip
    return line + "."


def refusal_rows(phases: list[Phase]) -> list[list[str]]:
    out = []
    for p in phases:
        for cause, n in p.refusals.items():
            out.append([p.label or p.mode, cause, str(n)])
    return out


def _per_second_max(samples: list[dict[str, float]], key: str) -> tuple[list[int], list[float]]:
    peak: dict[int, float] = {}
    for s in samples:
        sec = int(s["t"])
        peak[sec] = max(peak.get(sec, 0.0), s[key])
    secs = sorted(peak)
    return secs, [peak[x] for x in secs]


def charts(out: Path, phases: list[Phase], meta: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[tuple[str, str]] = []

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def save(fig: Any, name: str, title: str) -> None:
        # legends stand outside the plot area (right of it), never over the data
        fig.savefig(out / name, dpi=100, bbox_inches="tight")
        plt.close(fig)
        made.append((name, title))

    def legend_outside(ax: Any) -> None:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)

    def color(p: Phase) -> str:
        return COLORS.get(p.mode, "#333333")

    fig, ax = plt.subplots(figsize=(9, 4))
    for p in phases:
        t = [h["t"] for h in p.history]
        ax.plot(t, [h["rps"] - h["fps"] for h in p.history], color=color(p), label=f"{p.label} ok")
        ax.plot(t, [h["fps"] for h in p.history], ":", color=color(p), label=f"{p.label} errors")
    ax.set(xlabel="seconds", ylabel="requests/s", title="Successful requests/s (solid) and errors/s (dotted)")
    legend_outside(ax)
    save(fig, "rps.png", "Successful requests/s, errors apart")

    fig, ax = plt.subplots(figsize=(9, 4))
    for p in phases:
        pts = [h for h in p.history if h["p50"] > 0]  # Locust's window is empty at first
        for key, style in (("p50", ":"), ("p95", "--"), ("p99", "-")):
            ax.plot([h["t"] for h in pts], [h[key] for h in pts], style, color=color(p), label=f"{p.label} {key}")
    ax.set(xlabel="seconds", ylabel="ms", title="Latency percentiles (log scale)", yscale="log")
    # plain milliseconds on the log axis (1, 2, 5, 10, 20, 50 ...), no 4x10^3 notation
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    legend_outside(ax)
    save(fig, "latency.png", "Latency p50 / p95 / p99 over time")

    fig, ax = plt.subplots(figsize=(9, 4))
    for p in phases:
        ax.plot([h["t"] for h in p.history], [100.0 * h["fps"] / h["rps"] if h["rps"] else 0.0 for h in p.history],
                label=p.label, color=color(p))  # fmt: skip
    ax.set(xlabel="seconds", ylabel="% of requests", title="Error rate")
    legend_outside(ax)
    save(fig, "errors.png", "Error rate over time")

    fig, ax = plt.subplots(figsize=(9, 4))
    for p in phases:
        secs, peaks = _per_second_max(p.samples, "all_conns")
        ax.plot(secs, peaks, color=color(p), label=f"{p.label}: every client backend (max each second)")
    line = meta.get("refusal_line")
    if line:
        # An ordinary role's connect is refused once `line` connections exist. The count can go
        # above it: a refused connection is a backend (seen in pg_stat_activity) until the
        # server has told it so, and superusers may use the reserved slots.
        limits = f"max_connections {meta.get('max_connections')} - {meta.get('reserved')} reserved"
        ax.axhline(line, color="black", linestyle="--", label=f"refusals start at {line} connections\n({limits});"
                   "\nabove it: backends being refused,\nand superusers")  # fmt: skip
    if any(p.mode == "pgbouncer" for p in phases):
        bps = meta.get("args", {}).get("bouncer_pool_size")
        ax.axhline(bps, color=COLORS["pgbouncer"], linestyle="-.", label=f"PgBouncer default_pool_size = {bps}")
    cap = meta.get("args", {}).get("workers", 0) * meta.get("args", {}).get("max_size", 0)
    if cap:
        ax.axhline(cap, color=COLORS["pooled"], linestyle=":", label=f"workers x max_size = {cap}")
    ax.set(xlabel="seconds", ylabel="connections", title="Server connections (pg_stat_activity, sampled at 10 Hz)")
    legend_outside(ax)
    save(fig, "server_conns.png", "Server connections over time")
    return made


HOW_TO_READ = [
    "**ok req/s** is what users get: successful requests per second. **all req/s** counts failures too, "
    "and flatters per-request mode, whose refusals fail fast.",
    "**p50/p95/p99 ms** are Locust's response-time percentiles over the phase, failures included.",
    "**errors %**: failed requests. Per-request mode's are PostgreSQL refusing a connection (the refusals "
    "table below says which refusal); pooled mode's are 503s after a pool timeout.",
    "**peak server conns**: the most client backends PostgreSQL had at once (every client, sampled ten times "
    "a second). When it touches the dashed line on the connections chart, new connections are refused.",
    "**conns opened**: new server sessions during the phase (`pg_stat_database.sessions`).",
    "**per-request** opens a server connection for every request: conns opened follows its request count, "
    "and its connections follow concurrency until PostgreSQL refuses. Each connect costs a TCP handshake, "
    "a backend process fork and a scram-sha-256 exchange: that is where its CPU goes.",
    "**pooled** keeps at most workers x max_size connections, opened once; extra demand waits in the "
    "pool's FIFO queue (backpressure, seen as latency) or gets a 503 with Retry-After once a wait passes "
    "the pool timeout, never a refused connection.",
    "**recommended** is a short pooled phase at the sizing advisor's max_size, to check the advice.",
]


def sections(phases: list[Phase], meta: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]] | None]]:
    """(title, lines, table rows or None): the report's content, for both formats."""
    out: list[tuple[str, list[str], list[list[str]] | None]] = []
    headline = [x for x in (ratio_line(phases), recommended_line(phases, meta)) if x]
    out.append(("Summary", headline, None))
    out.append(("How to read it", HOW_TO_READ, None))
    refusals = refusal_rows(phases)
    out.append(("Failures by cause (a refused connection's SQLSTATE, or the pool's 503)",
                [] if refusals else ["none"], refusals or None))  # fmt: skip
    for p in phases:
        if p.mode == "pgbouncer":
            out.append(
                (
                    "Via PgBouncer",
                    [
                        f"{p.clients} client connections from the app hosts' pools; PostgreSQL backends peaked at "
                        f"{p.peak_app_conns} (PgBouncer default_pool_size {meta['args'].get('bouncer_pool_size')})."
                    ],
                    None,
                )
            )
    cpu_lines = [f"{p.label}: " + ", ".join(f"{k} {v:.0f}%" for k, v in p.cpu.items()) for p in phases if p.cpu]
    if cpu_lines:
        out.append(("CPU share of the whole machine during each phase (from /proc)", cpu_lines, None))
    advice = next((p.advice for p in phases if p.mode == "pooled" and p.advice.get("reasoning")), None)
    if advice:
        out.append(("Sizing advisor (one pooled worker's view, pool.advise())",
                    advice["reasoning"] + [f"warning: {w}" for w in advice.get("warnings", [])], None))  # fmt: skip
    timing = [line for p in phases if (line := time_split_line(p, meta))]
    if timing:
        out.append(("Where the time went: before the app, inside it, waiting for the pool", timing, None))
    pool_lines = []
    for p in phases:
        for i, s in enumerate(p.pool_stats):
            pool_lines.append(f"{p.label}, worker {i}: borrows {s.get('borrows')}, waits {s.get('waits')}, "
                              f"timeouts {s.get('timeouts')}, wait p99 {float(s.get('wait_p99_ms') or 0):.1f} ms, "
                              f"size {s.get('size')}")  # fmt: skip
    if pool_lines:
        out.append(("Pool stats at the end of each pooled phase", pool_lines, None))
    return out


def write(out: Path, phases: list[Phase], meta: dict[str, Any]) -> str:
    """Write the charts, report.md and report.html into ``out``; return the terminal table."""
    imgs = charts(out, phases, meta) if phases else []
    a = meta["args"]
    setup = (f"{meta['server']}; gunicorn gthread {a['workers']} workers x {a['threads']} threads; pool max_size "
             f"{a['max_size']} per worker, timeout {a['pool_timeout']} s; Locust {a['users']} users "
             f"(spawn {a['spawn_rate']}/s), {a['duration']} s per phase, mix {a['mix']}; "
             f"{meta['cores']} cores, Python {meta['python']}")  # fmt: skip
    secs = sections(phases, meta)
    md = ["# threadpool_db: thread-per-request vs the bounded pool", "", setup, "", markdown_table(phases), ""]
    for title, lines, table in secs:
        md += [f"## {title}", ""]
        md += [f"- {x}" for x in lines]
        if table:
            md += ["| phase | cause | count |", "|---|---|---|", *[f"| {r[0]} | {r[1]} | {r[2]} |" for r in table]]
        md.append("")
    md += [f"![{t}]({n})" for n, t in imgs]
    (out / "report.md").write_text("\n".join(md) + "\n")

    def para(x: str) -> str:  # **bold** from the shared lines, escaped otherwise
        parts = html.escape(x).split("**")
        return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))

    body = []
    for title, lines, table in secs:
        body.append(f"<h3>{html.escape(title)}</h3>")
        if lines:
            body.append("<ul>" + "".join(f"<li>{para(x)}</li>" for x in lines) + "</ul>")
        if table:
            body.append(
                "<table><tr><th>phase</th><th>cause</th><th>count</th></tr>"
                + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in table)
                + "</table>"
            )
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows(phases))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>threadpool_db comparison</title>
<style>body{{font:14px system-ui,sans-serif;margin:2rem;max-width:1000px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}}td:first-child,td:nth-child(2){{text-align:left}}
img{{max-width:100%}}</style>
</head><body><h1>thread-per-request vs the bounded pool</h1><p>{html.escape(setup)}</p>
<table><tr>{"".join(f"<th>{h}</th>" for h in HEAD)}</tr>{trs}</table>
{"".join(body)}
{"".join(f'<h2>{html.escape(t)}</h2><img src="{n}" alt="{html.escape(t)}">' for n, t in imgs)}
</body></html>"""
    (out / "report.html").write_text(page)
    cpu = next((lines for title, lines, _ in secs if title.startswith("CPU")), [])
    head = next((lines for title, lines, _ in secs if title == "Summary"), [])
    return "\n".join([markdown_table(phases), *head, *(f"CPU {x}" for x in cpu)]).strip()
