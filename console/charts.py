"""Line charts as inline SVG, drawn on the server: no script, no chart library."""

from __future__ import annotations

import time
from html import escape

from markupsafe import Markup

from console.series import Line

W, H, PAD_L, PAD_B, PAD_T = 640, 160, 52, 20, 8
COLORS = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def line_chart(title: str, lines: list[Line], unit: str = "", span: float = 3600.0) -> Markup:
    """``span`` seconds back from now at most; less when the samples began later."""
    now = time.time()
    first = min((t for line in lines for t, _ in line.points), default=now - span)
    span = min(span, max(120.0, now - first))
    start = now - span
    top = max([v for line in lines for _, v in line.points] + [0.0])
    top = top * 1.1 if top > 0 else 1.0
    plot_w, plot_h = W - PAD_L - 8, H - PAD_B - PAD_T

    def x(t: float) -> float:
        return PAD_L + plot_w * max(0.0, min(1.0, (t - start) / span))

    def y(v: float) -> float:
        return PAD_T + plot_h * (1 - v / top)

    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{W - 8}" y2="{PAD_T + plot_h}" '
        'stroke="#9ca3af"/>',
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{PAD_T + plot_h}" stroke="#9ca3af"/>',
        f'<text x="{PAD_L - 4}" y="{PAD_T + 10}" text-anchor="end">{_fmt(top)}{unit}</text>',
        f'<text x="{PAD_L - 4}" y="{PAD_T + plot_h}" text-anchor="end">0</text>',
        f'<text x="{PAD_L}" y="{H - 4}">-{span / 60:.0f} min</text>',
        f'<text x="{W - 8}" y="{H - 4}" text-anchor="end">now</text>',
    ]
    for i, line in enumerate(lines):
        color = COLORS[i % len(COLORS)]
        if len(line.points) == 1:
            t, v = line.points[0]
            parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}"/>')
        elif line.points:
            coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in line.points)
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{coords}"/>'
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><i class="c{i % len(COLORS)}"></i>{escape(line.name)}</span>'
        for i, line in enumerate(lines)
    )
    empty = "" if any(line.points for line in lines) else '<p class="muted">no samples yet</p>'
    # Every value above is escaped or a number.
    return Markup(
        f"<figure><figcaption>{escape(title)}</figcaption>{''.join(parts)}"
        f'<div class="legend">{legend}</div>{empty}</figure>'
    )
