"""What the bench reports: the targets it checks, a markdown table, one line per route, a plot."""

from __future__ import annotations

import statistics
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# (route, reference) -> lowest acceptable ratio of the service's req/s to the reference's, same rounds. The
# flask reference is measured and shown, with no bar: the service is far past it.
TARGETS_VS_REFERENCE = {
    ("/hello", "fastapi"): 1.15,
    ("/healthz", "fastapi"): 1.4,
    ("/hello", "granian"): 0.90,
}
TARGET_SCALING = 0.95  # /hello at the most users against the fewest, same store
TARGET_JSON_RSS_MIB = 80  # per worker after the load, JSON store, most users


def format_configuration(config: dict) -> str:
    """One console line per route: req/s, latency, ratios."""
    lines = []
    for route, entry in config["routes"].items():
        service = entry["service"]
        ratios = "".join(
            f" ({reference['ratio_rps']:.2f}x {name})" for name, reference in entry["references"].items()
        )
        lines.append(
            f"  {config['store']:<10} {config['users']:>6} {route:<13} {service['rps']:>9.1f} req/s "
            f"p50 {service['p50_ms']:.2f} ms p99 {service['p99_ms']:.2f} ms{ratios}"
        )
    return "\n".join(lines)


def _check(target: str, value: float, met: bool, unit: str = "x") -> dict:
    return {"target": target, "value": value, "unit": unit, "met": met}


def check_targets(results: dict) -> list[dict]:
    checks = []
    configs = results["configurations"]
    for config in configs:
        where = f"{config['store']}, {config['users']:,} users"
        for (route, name), lowest in TARGETS_VS_REFERENCE.items():
            reference = config["routes"][route]["references"].get(name)
            if reference is not None:
                value = reference["ratio_rps"]
                checks.append(
                    _check(f"{route} >= {lowest}x {name} reference ({where})", value, value >= lowest)
                )
    # Measured in the same rounds (bench/run.py), the median of the per-round ratios.
    for scaling in results.get("scaling", []):
        value = scaling["ratio_rps"]
        target = (
            f"/hello at {scaling['high']:,} users >= {TARGET_SCALING}x at {scaling['low']:,} users "
            f"({scaling['store']})"
        )
        checks.append(_check(target, value, value >= TARGET_SCALING))
    json_configs = [c for c in configs if c["store"] == "json"]
    if json_configs:
        largest = max(json_configs, key=lambda c: c["users"])
        value = round(max(row["rss_mib"] for row in largest["memory"]["after_load"]), 1)
        target = (
            f"JSON store, {largest['users']:,} users: RSS per worker after the load "
            f"<= {TARGET_JSON_RSS_MIB} MiB"
        )
        checks.append(_check(target, value, value <= TARGET_JSON_RSS_MIB, unit=" MiB"))
    return checks


def mean_memory(rows: list[dict[str, float]], pss: bool = True) -> str:
    """Mean RSS (and PSS) of some processes, as table text."""
    if not rows:
        return "n/a"
    rss = statistics.mean(row["rss_mib"] for row in rows)
    if not pss:
        return f"{rss:.0f}"
    return f"{rss:.0f} ({statistics.mean(row['pss_mib'] for row in rows):.0f})"


def markdown(results: dict) -> str:
    wrk_args = results["wrk"]
    names = list(results["references"])
    lines = [
        f"Measured {results['started']} on {results['machine']['cpus']} CPUs, loopback, "
        f"`wrk -t{wrk_args['threads']} -c{wrk_args['connections']} -d{wrk_args['duration_s']}s`, "
        + (
            "gunicorn worker class as gunicorn.conf.py sets it; "
            if results["worker_class"] == "config"
            else f"gunicorn worker class {results['worker_class']}; "
        )
        + f"median of {results['repeats']} rounds alternating the service and the references "
        "(ratio: median over the rounds of service / reference)"
        + (f"; {results['machine']['note']}" if results["machine"]["note"] else "")
        + ". References: "
        + "; ".join(f"{key}: {title}" for key, title in results["references"].items())
        + ". `/id` and `/authenticate` have no counterpart in the references: their figures are absolute.",
        "",
        "| store | users | route | req/s | p50 / p99 ms | "
        + " | ".join(f"{name} req/s | {name} ratio" for name in names)
        + " |",
        "| --- | ---: | --- | ---: | ---: | " + " | ".join("---: | ---:" for _ in names) + " |",
    ]
    for config in results["configurations"]:
        for route, entry in config["routes"].items():
            service = entry["service"]
            cells = []
            for name in names:
                reference = entry["references"].get(name)
                cells.append(
                    f"{reference['rps']:,.0f} | {reference['ratio_rps']:.2f}x" if reference else "| "
                )
            lines.append(
                f"| {config['store']} | {config['users']:,} | `{route}` | {service['rps']:,.0f} | "
                f"{service['p50_ms']:.2f} / {service['p99_ms']:.2f} | " + " | ".join(cells) + " |"
            )
    lines += ["", "| target | measured | met |", "| --- | ---: | :---: |"]
    for check in results["targets"]:
        value = f"{check['value']:.2f}{check['unit']}"
        lines.append(f"| {check['target']} | {value} | {'yes' if check['met'] else 'no'} |")
    lines += [
        "",
        "| app | store | users | per worker, idle: RSS MiB (PSS) | per worker, after the load "
        "| master RSS MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for config in results["configurations"]:
        memory_use = config["memory"]
        lines.append(
            f"| service | {config['store']} | {config['users']:,} | {mean_memory(memory_use['idle'])} | "
            f"{mean_memory(memory_use['after_load'])} | {mean_memory(memory_use['master'], pss=False)} |"
        )
    for name, memory_use in results["reference_memory"].items():
        lines.append(
            f"| {name} reference | in memory | 1 | {mean_memory(memory_use['idle'])} | "
            f"{mean_memory(memory_use.get('after_load', []))} | |"
        )
    return "\n".join(lines) + "\n"


ROUTE_COLORS = {"/healthz": "#4c72b0", "/hello": "#55a868", "/id": "#8172b2", "/authenticate": "#c44e52"}


def plot(results: dict, path: Path) -> None:
    """Throughput of every route and the ratios to the references, as a PNG (Agg, no display needed)."""
    configs = results["configurations"]
    names = list(results["references"])
    labels = [f"{c['store']}\n{c['users']:,} users" for c in configs]
    fig = Figure(figsize=(13, 5.6))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})

    bars = [(route, None) for route in ROUTE_COLORS] + [
        (route, name) for name in names for route in ("/healthz", "/hello")
    ]
    width = 0.8 / len(bars)
    hatches = dict(zip(names, ("//", "..", "xx"), strict=False))
    for index, config in enumerate(configs):
        offset = index - 0.4 + width / 2
        for route, name in bars:
            entry = config["routes"].get(route)
            if entry is not None:
                figures = entry["service"] if name is None else entry["references"][name]
                label = (route if name is None else f"{name} {route}") if index == 0 else None
                style = {} if name is None else {"hatch": hatches[name], "alpha": 0.45}
                left.bar(offset, figures["rps"], width, color=ROUTE_COLORS[route], label=label, **style)
            offset += width
    left.set_yscale("log")
    left.set_xticks(range(len(configs)), labels)
    left.set_ylabel("requests per second (log scale)")
    left.set_title("Throughput, 4 workers each (hatched: the references)")
    left.set_ylim(bottom=0.5)
    left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=4)
    left.grid(axis="y", which="both", alpha=0.3)

    pairs = [(route, name) for name in names for route in ("/healthz", "/hello")]
    bar = 0.8 / len(pairs)
    for position, (route, name) in enumerate(pairs):
        xs = [i - 0.4 + bar / 2 + position * bar for i in range(len(configs))]
        values = [c["routes"][route]["references"][name]["ratio_rps"] for c in configs]
        right.bar(xs, values, bar, color=ROUTE_COLORS[route], hatch=hatches[name], label=f"{route} / {name}")
        for x, value in zip(xs, values, strict=True):
            right.text(x, value + 0.01, f"{value:.2f}", ha="center", fontsize=7)
    right.axhline(1.0, color="#333333", linestyle="--", linewidth=1)
    right.set_xticks(range(len(configs)), labels)
    highest = max(
        c["routes"][route]["references"][name]["ratio_rps"] for c in configs for route, name in pairs
    )
    right.set_ylim(0, max(1.25, highest + 0.15))
    right.set_title("Service req/s as a ratio to each reference")
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)
    right.grid(axis="y", alpha=0.3)

    fig.suptitle(
        f"flask-api benchmark, {results['started']} ({results['machine']['cpus']} shared CPUs)", fontsize=11
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
