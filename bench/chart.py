"""Draw docs/bench.png: req/s per scenario per server (log scale). Run by bench/run.py.

    python chart.py MEDIANS.json OUT.png

MEDIANS.json: {"scenarios": [...], "servers": [...], "reference": "maitre", "ceiling": "nginx",
"repeat": 2, "cpu": "...", "date": "...", "rps": {scenario: {server: req/s or null}}}.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.ticker import FuncFormatter

COLORS = {
    "maitre": "#d62728", "waitress": "#1f77b4", "gunicorn-sync": "#aec7e8",
    "gunicorn-gthread": "#6baed6", "granian": "#ff7f0e", "bjoern": "#2ca02c",
    "pyruvate": "#9467bd", "meinheld": "#8c564b", "cheroot": "#e377c2", "nginx": "#7f7f7f",
}


def human(x, _pos=None):
    if x >= 1e6:
        return f"{x / 1e6:g}M"
    if x >= 1e3:
        return f"{x / 1e3:g}k"
    return f"{x:g}"


def main():
    with open(sys.argv[1]) as f:
        d = json.load(f)
    scenarios, servers = d["scenarios"], d["servers"]
    n = len(servers)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.35 * len(scenarios) + 2), 5.2), dpi=110)
    for i, sv in enumerate(servers):
        xs, ys = [], []
        for j, sc in enumerate(scenarios):
            v = d["rps"].get(sc, {}).get(sv)
            if v:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(v)
        ref = sv == d["reference"]
        ax.bar(xs, ys, width=width * 0.95, label=sv, color=COLORS.get(sv, None),
               edgecolor="black" if ref else "none", linewidth=0.8 if ref else 0,
               hatch="//" if sv == d["ceiling"] else None, zorder=3)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(human))
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels(scenarios)
    ax.set_xlim(-0.5, len(scenarios) - 0.5)
    ax.set_ylabel("requests per second (log scale)")
    ax.grid(axis="y", which="major", alpha=0.4, zorder=0)
    ax.set_title(f"WSGI servers on one pinned core, median of {d['repeat']} "
                 f"({d['cpu']}, {d['date']}; nginx = no-Python ceiling)", fontsize=9)
    ax.legend(ncol=min(n, 5), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08),
              frameon=False)
    fig.tight_layout()
    fig.savefig(sys.argv[2])


if __name__ == "__main__":
    main()
