#!/usr/bin/env python3
"""Draws verify latency against client count as an SVG (stdlib only).

usage: plot.py OUT.svg < rows   where each row is: clients warm_p50 warm_p99 cold_p50 cold_p99 (ms)
"""
import sys

rows = [list(map(float, line.split())) for line in sys.stdin if line.strip()]
W, H, L, R, T, B = 640, 400, 70, 170, 40, 60
xs = [r[0] for r in rows]
ymax = max(max(r[1:]) for r in rows) * 1.15 or 1
series = [("warm p50", 1, "#1f77b4", ""), ("warm p99", 2, "#1f77b4", "6,4"),
          ("cold p50", 3, "#d62728", ""), ("cold p99", 4, "#d62728", "6,4")]

def px(i):
    return L + (W - L - R) * (i / max(len(xs) - 1, 1))

def py(v):
    return H - B - (H - T - B) * (v / ymax)

out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2 - 60}" y="22" font-size="14">POST /v1/keys/verify latency</text>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<text x="{(L+W-R)/2 - 40}" y="{H-15}">clients in the database</text>',
       f'<text x="15" y="{T-10}">ms</text>']
for k in range(6):
    v = ymax * k / 5
    out.append(f'<line x1="{L-4}" y1="{py(v):.1f}" x2="{W-R}" y2="{py(v):.1f}" stroke="#ddd"/>')
    out.append(f'<text x="{L-8}" y="{py(v)+4:.1f}" text-anchor="end">{v:.2f}</text>')
for i, x in enumerate(xs):
    label = f"{int(x):,}"
    out.append(f'<text x="{px(i):.1f}" y="{H-B+18}" text-anchor="middle">{label}</text>')
for n, (name, col, color, dash) in enumerate(series):
    pts = " ".join(f"{px(i):.1f},{py(r[col]):.1f}" for i, r in enumerate(rows))
    out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
    for i, r in enumerate(rows):
        out.append(f'<circle cx="{px(i):.1f}" cy="{py(r[col]):.1f}" r="3" fill="{color}"/>')
    y = T + 20 * n
    out.append(f'<line x1="{W-R+15}" y1="{y}" x2="{W-R+45}" y2="{y}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
    out.append(f'<text x="{W-R+50}" y="{y+4}">{name}</text>')
out.append("</svg>")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
