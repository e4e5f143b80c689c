#!/usr/bin/env python3
"""Draws a benchmark CSV written by perf/compare.py as one SVG (stdlib only).

Top panel: grouped bars per case, median rate normalised to nats-server with
the same generator (1.0 = parity). Bottom panel: request/reply latency
percentiles (p50 .. max, log scale) per server and generator.

usage: perf/plot.py RESULTS.csv [-o OUT.svg]
"""

import csv
import math
import os
import statistics
import sys
from xml.sax.saxutils import escape

COLORS = {
    "ringnats": "#d62728",
    "nats-server": "#1f77b4",
    "gnatsd": "#2ca02c",
    "ceiling": "#7f7f7f",
}
EXTRA_COLORS = ["#9467bd", "#8c564b", "#e377c2", "#17becf"]
GEN_OPACITY = {"ours": 1.0, "go": 0.45}
PCTS = [("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99"), ("p999_us", "p99.9"), ("max_us", "max")]


def _f(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def load(csv_path):
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["ok"] = r.get("ok") in ("True", "true", "1")
    return rows


def medians(rows):
    groups = {}
    for r in rows:
        if not r["ok"] or _f(r.get("rate")) is None:
            continue
        groups.setdefault((r["case"], r["gen"], r["server"]), []).append(r)
    out = {}
    for k, rs in groups.items():
        d = {"rate": statistics.median(_f(r["rate"]) for r in rs)}
        for key, _ in PCTS:
            vals = [_f(r.get(key)) for r in rs if _f(r.get(key)) is not None]
            d[key] = statistics.median(vals) if vals else None
        out[k] = d
    return out


def color(server, order):
    if server in COLORS:
        return COLORS[server]
    return EXTRA_COLORS[order.index(server) % len(EXTRA_COLORS)]


def render(csv_path, svg_path, title="ringnats benchmark"):
    rows = load(csv_path)
    med = medians(rows)
    cases = []
    servers = []
    gens = []
    for r in rows:
        if r["case"] not in cases:
            cases.append(r["case"])
        if r["server"] not in servers:
            servers.append(r["server"])
        if r["gen"] not in gens:
            gens.append(r["gen"])
    pref = ["ringnats", "nats-server", "gnatsd", "ceiling"]
    servers.sort(key=lambda s: pref.index(s) if s in pref else len(pref))
    gens.sort(key=lambda g: 0 if g == "ours" else 1)
    ref = "nats-server" if "nats-server" in servers else (servers[0] if servers else None)
    rate_cases = [c for c in cases if any(med.get((c, g, s)) for g in gens for s in servers)]

    # ---- bar panel geometry
    series = [(s, g) for g in gens for s in servers]
    bar_w = 9
    group_w = max(1, len(series)) * bar_w + 14
    left, top = 70, 60
    plot_h = 260
    width = max(760, left + 30 + group_w * len(rate_cases))
    ratios = []
    bars = []
    for ci, c in enumerate(rate_cases):
        for si, (s, g) in enumerate(series):
            m = med.get((c, g, s))
            r0 = med.get((c, g, ref))
            if not m or not r0 or not r0["rate"]:
                continue
            ratio = m["rate"] / r0["rate"]
            ratios.append(ratio)
            bars.append((ci, si, s, g, ratio, m["rate"]))
    ymax = max([1.2] + [r * 1.1 for r in ratios])
    ymax = min(ymax, 8.0)
    svg = []
    lat_h = 260
    height = top + plot_h + 120 + lat_h + 90
    svg.append('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">'
               % (width, height))
    svg.append('<rect width="100%" height="100%" fill="white"/>')
    svg.append('<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>' % (left, escape(title)))
    svg.append('<text x="%d" y="40">Median rate relative to %s with the same generator (solid: ringnats-bench, pale: Go client)</text>'
               % (left, escape(ref or "?")))

    def y_of(v):
        return top + plot_h - (min(v, ymax) / ymax) * plot_h

    # grid
    step = 0.25 if ymax <= 2 else (0.5 if ymax <= 4 else 1.0)
    v = 0.0
    while v <= ymax + 1e-9:
        y = y_of(v)
        svg.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="%s"/>'
                   % (left, y, width - 20, y, "#333" if abs(v - 1) < 1e-9 else "#ddd",
                      "1.2" if abs(v - 1) < 1e-9 else "0.6"))
        svg.append('<text x="%d" y="%.1f" text-anchor="end">%.2g×</text>' % (left - 6, y + 4, v))
        v += step
    for ci, si, s, g, ratio, rate in bars:
        x = left + 10 + ci * group_w + si * bar_w
        y = y_of(ratio)
        svg.append('<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s" fill-opacity="%.2f">'
                   '<title>%s %s %s: %.3g msgs/s (%.2f×)</title></rect>'
                   % (x, y, bar_w - 1, top + plot_h - y, color(s, servers), GEN_OPACITY.get(g, 0.7),
                      escape(rate_cases[ci]), escape(s), escape(g), rate, ratio))
        if ratio > ymax:
            svg.append('<text x="%d" y="%.1f" font-size="9">%.1f</text>' % (x, top - 2, ratio))
    for ci, c in enumerate(rate_cases):
        x = left + 10 + ci * group_w + (len(series) * bar_w) / 2
        y = top + plot_h + 12
        svg.append('<text x="%.1f" y="%d" text-anchor="end" transform="rotate(-35 %.1f %d)">%s</text>'
                   % (x, y, x, y, escape(c)))
    # legend
    lx, ly = left, top + plot_h + 75
    for i, (s, g) in enumerate(series):
        x = lx + (i % 6) * 120
        y = ly + (i // 6) * 16
        svg.append('<rect x="%d" y="%d" width="10" height="10" fill="%s" fill-opacity="%.2f"/>'
                   % (x, y - 9, color(s, servers), GEN_OPACITY.get(g, 0.7)))
        svg.append('<text x="%d" y="%d">%s / %s</text>' % (x + 14, y, escape(s), escape(g)))

    # ---- latency panel
    ltop = top + plot_h + 120
    lat_series = []
    for g in gens:
        for s in servers:
            for c in cases:
                m = med.get((c, g, s))
                if m and m.get("p50_us"):
                    lat_series.append((c, s, g, [m.get(k) for k, _ in PCTS]))
    svg.append('<text x="%d" y="%d" font-size="13" font-weight="bold">Request/reply latency percentiles (µs, log scale)</text>'
               % (left, ltop - 12))
    vals = [v for *_, ps in lat_series for v in ps if v]
    if vals:
        lo = 10 ** math.floor(math.log10(max(min(vals), 0.1)))
        hi = 10 ** math.ceil(math.log10(max(vals)))
        if hi <= lo:
            hi = lo * 10
        pw = min(width - left - 200, 520)

        def ly_of(v):
            return ltop + lat_h - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * lat_h

        d = lo
        while d <= hi * 1.0001:
            y = ly_of(d)
            svg.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (left, y, left + pw, y))
            svg.append('<text x="%d" y="%.1f" text-anchor="end">%g</text>' % (left - 6, y + 4, d))
            d *= 10
        xs = [left + 20 + i * (pw - 40) / (len(PCTS) - 1) for i in range(len(PCTS))]
        for x, (_, label) in zip(xs, PCTS):
            svg.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x, ltop + lat_h + 16, label))
        for i, (c, s, g, ps) in enumerate(lat_series):
            pts = [(x, ly_of(v)) for x, v in zip(xs, ps) if v]
            dash = "" if g == "ours" else ' stroke-dasharray="5,3"'
            svg.append('<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>'
                       % (color(s, servers), dash, " ".join("%.1f,%.1f" % p for p in pts)))
            for (x, y), v in zip(pts, [v for v in ps if v]):
                svg.append('<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"><title>%s %s %s: %.1f µs</title></circle>'
                           % (x, y, color(s, servers), escape(c), escape(s), escape(g), v))
            lyy = ltop + 10 + i * 16
            svg.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>'
                       % (left + pw + 20, lyy - 4, left + pw + 40, lyy - 4, color(s, servers), dash))
            svg.append('<text x="%d" y="%d">%s / %s%s</text>'
                       % (left + pw + 45, lyy, escape(s), escape(g),
                          "" if len({x[0] for x in lat_series}) == 1 else " (%s)" % escape(c)))
    else:
        svg.append('<text x="%d" y="%d">no latency data in this run</text>' % (left, ltop + 20))
    svg.append("</svg>")
    with open(svg_path, "w") as f:
        f.write("\n".join(svg) + "\n")
    return svg_path


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    src = argv[0]
    out = os.path.splitext(src)[0] + ".svg"
    if "-o" in argv:
        out = argv[argv.index("-o") + 1]
    render(src, out, title="ringnats " + os.path.splitext(os.path.basename(src))[0])
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
