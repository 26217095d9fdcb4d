#!/usr/bin/env python3
"""Draws a soak's server memory and legitimate p99 over time, one line per backend, as an
SVG (stdlib only).

usage: plot.py OUT.svg < samples   each: backend seconds rss_mb fds requests p50 p99 refused hostile 5xx
"""
import sys

rows = [line.split() for line in sys.stdin if line.strip()]
backends = sorted({r[0] for r in rows})
colors = {"sqlite": "#1f77b4", "postgres": "#d62728"}
W, PANEL, L, R, T, GAP = 720, 220, 70, 150, 40, 50
H = T + 2 * PANEL + GAP + 40
tmax = max(float(r[1]) for r in rows) or 1


def panel(top, title, unit, column):
    values = [float(r[column]) for r in rows]
    vmax = max(values) * 1.15 or 1
    out = [f'<text x="{L}" y="{top - 12}" font-size="14">{title}</text>',
           f'<line x1="{L}" y1="{top + PANEL}" x2="{W - R}" y2="{top + PANEL}" stroke="black"/>',
           f'<line x1="{L}" y1="{top}" x2="{L}" y2="{top + PANEL}" stroke="black"/>']
    for k in range(5):
        v = vmax * k / 4
        y = top + PANEL - PANEL * v / vmax
        out.append(f'<line x1="{L - 4}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 8}" y="{y + 4:.1f}" text-anchor="end">{v:.1f} {unit}</text>')
    for i, b in enumerate(backends):
        points = " ".join(
            f"{L + (W - L - R) * float(r[1]) / tmax:.1f},{top + PANEL - PANEL * float(r[column]) / vmax:.1f}"
            for r in rows if r[0] == b)
        out.append(f'<polyline fill="none" stroke="{colors.get(b, "black")}" stroke-width="2" points="{points}"/>')
        out.append(f'<text x="{W - R + 10}" y="{top + 20 + 18 * i}" fill="{colors.get(b, "black")}">{b}</text>')
    return out


out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>']
out += panel(T, "Server memory (RSS) during the soak", "MB", 2)
out += panel(T + PANEL + GAP, "Legitimate requests, p99 latency", "ms", 6)
out.append(f'<text x="{(L + W - R) / 2 - 40}" y="{H - 10}">seconds into the soak (0 to {tmax:.0f})</text>')
out.append("</svg>")
with open(sys.argv[1], "w") as f:
    f.write("\n".join(out) + "\n")
