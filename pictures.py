"""Pictures of a run (the ``pictures`` extra, matplotlib, headless): a fault timeline, a benchmark chart.

Demo and test tooling: ``make chaos`` draws one timeline per scenario, ``make bench`` a chart of
its comparisons, one of the spike test's connections over time and one of the saturating
database's limits and goodput, ``alchemy-hex demo --faults`` the timeline of its scripted faults.
Matplotlib is imported when a picture is drawn, with the Agg backend, so no display is ever needed and a
service without the extra never loads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["Timeline", "available", "bench_chart", "p99", "saturation_chart", "spike_chart", "timeline_chart"]

#: The width of one point of the timeline, in seconds.
BUCKET_S: Final = 0.25


@dataclass(frozen=True, slots=True)
class Timeline:
    """Calls ``(started, ended, error type or None)`` on one clock, the faults ``(from, to)`` on it
    (an instant when equal), and when the service recovered (``None``: not marked)."""

    calls: Sequence[tuple[float, float, str | None]]
    faults: Sequence[tuple[float, float]] = ()
    recovered_at: float | None = None


def available() -> bool:
    """Whether matplotlib can be imported (the ``pictures`` extra is installed)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: files only
    import matplotlib.pyplot as plt

    return plt


def timeline_chart(path: Path, title: str, timeline: Timeline) -> Path:
    """Throughput, failures by type and p99 latency over time, faults shaded, recovery marked."""
    calls = sorted(timeline.calls, key=lambda call: call[1])
    origin = min([c[0] for c in calls] + [f[0] for f in timeline.faults], default=0.0)
    end = max([c[1] for c in calls] + [f[1] for f in timeline.faults], default=origin + BUCKET_S)
    buckets = max(1, math.ceil((end - origin) / BUCKET_S))
    xs = [(i + 0.5) * BUCKET_S for i in range(buckets)]
    ok = [0] * buckets
    failed: dict[str, list[int]] = {}
    durations: list[list[float]] = [[] for _ in range(buckets)]
    for started, ended, error in calls:
        i = min(int((ended - origin) / BUCKET_S), buckets - 1)
        durations[i].append(ended - started)
        if error is None:
            ok[i] += 1
        else:
            failed.setdefault(error, [0] * buckets)[i] += 1
    plt = _pyplot()
    figure, (throughput, failures, latency) = plt.subplots(3, 1, sharex=True, figsize=(10, 7))
    throughput.plot(xs, [n / BUCKET_S for n in ok], color="tab:green", label="ok")
    throughput.set_ylabel("ok calls/s")
    for error, counts in sorted(failed.items(), key=lambda item: -sum(item[1]))[:6]:
        failures.plot(xs, [n / BUCKET_S for n in counts], label=error)
    failures.set_ylabel("failed calls/s")
    if failed:
        failures.legend(loc="upper right", fontsize="small")
    latency.plot(xs, [p99(d) * 1000 for d in durations], color="tab:purple")
    latency.set_ylabel("p99 latency (ms)")
    latency.set_ylim(bottom=0)
    latency.ticklabel_format(axis="y", useOffset=False)
    latency.set_xlabel("seconds")
    for axes in (throughput, failures, latency):
        for begin, finish in timeline.faults:
            if finish > begin:
                axes.axvspan(begin - origin, finish - origin, color="tab:red", alpha=0.15)
            else:
                axes.axvline(begin - origin, color="tab:red", alpha=0.6, linestyle=":")
        if timeline.recovered_at is not None:
            axes.axvline(timeline.recovered_at - origin, color="tab:blue", linestyle="--")
        axes.grid(alpha=0.3)
    marks = "fault shaded red" + (", recovery dashed blue" if timeline.recovered_at is not None else "")
    throughput.set_title(f"{title}  ({marks})")
    return _save(figure, plt, path)


def p99(durations: Sequence[float]) -> float:
    """The 99th percentile (nearest rank) of ``durations``; NaN for none. Plain Python, no matplotlib."""
    if not durations:
        return math.nan
    ordered = sorted(durations)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def bench_chart(
    path: Path, runs: Mapping[str, Mapping[str, Mapping[str, float]]], ratios: Mapping[str, float]
) -> Path:
    """Throughput of every configuration at every concurrency level, and the comparisons' ratios."""
    plt = _pyplot()
    names = list(runs)
    levels = sorted({level for by_level in runs.values() for level in by_level}, key=int)
    figure, (bars, compared) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / max(1, len(levels))
    for j, level in enumerate(levels):
        values = [runs[name].get(level, {}).get("ops_per_s", 0.0) for name in names]
        bars.bar([i + j * width for i in range(len(names))], values, width, label=f"c={level}")
    bars.set_xticks([i + width * (len(levels) - 1) / 2 for i in range(len(names))])
    bars.set_xticklabels([name.split("_", 1)[0] for name in names])
    bars.set_ylabel("ops/s (median round)")
    bars.set_title("SELECT 1 / ORM read-modify-write by configuration (letters as in the README)")
    bars.legend()
    bars.grid(axis="y", alpha=0.3)
    keys = list(ratios)
    compared.barh(keys, [ratios[k] for k in keys], color="tab:gray")
    compared.axvline(0.95, color="tab:red", linestyle="--", label="0.95 goal")
    compared.axvline(1.0, color="black", linewidth=0.8)
    compared.set_xlim(0.5, 1.3)
    compared.set_title("ratios (geometric mean)")
    compared.legend(loc="lower right", fontsize="small")
    return _save(figure, plt, path)


def spike_chart(path: Path, series: Mapping[str, Sequence[tuple[float, int, int, int]]]) -> Path:
    """Connections held and connects under way over the spike, one line per pool.

    ``series`` maps a pool's name to its samples ``(ms since the burst, held, waiting, connecting)``.
    """
    plt = _pyplot()
    figure, (held, connecting) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for name, samples in series.items():
        at = [s[0] for s in samples]
        held.step(at, [s[1] for s in samples], where="post", label=name)
        connecting.step(at, [s[3] for s in samples], where="post", label=name)
    held.set_ylabel("connections held")
    held.set_title("50 requests at once, connect 150 ms, query 2 ms, max 50, min idle 5")
    held.legend()
    held.grid(alpha=0.3)
    connecting.set_ylabel("connects under way")
    connecting.set_xlabel("ms since the burst")
    connecting.grid(alpha=0.3)
    return _save(figure, plt, path)


def saturation_chart(
    path: Path,
    limits: Mapping[str, Sequence[tuple[float, int]]],
    goodput: Mapping[str, Mapping[str, float]],
    phases: Sequence[tuple[str, float]],
    phase_s: float,
) -> Path:
    """The adaptive limits over time (phases shaded), and goodput per phase and limit.

    ``limits`` maps a limit's name to ``(seconds, limit)`` samples; ``goodput`` maps it to its
    share of capacity per phase; ``phases`` are ``(name, offered share of capacity)`` in order.
    """
    plt = _pyplot()
    figure, (over_time, bars) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    for i, (name, share) in enumerate(phases):
        if share > 1:
            over_time.axvspan(i * phase_s, (i + 1) * phase_s, color="tab:red", alpha=0.12)
        over_time.text(
            (i + 0.5) * phase_s,
            0.98,
            f"{name} ({share:.0%})",
            ha="center",
            va="top",
            transform=over_time.get_xaxis_transform(),
            fontsize="small",
        )
    for name, samples in limits.items():
        over_time.step([s[0] for s in samples], [s[1] for s in samples], where="post", label=name)
    over_time.set_xlabel("s")
    over_time.set_ylabel("concurrency limit")
    over_time.set_title("limit over time (2x overload shaded)")
    over_time.legend()
    over_time.grid(alpha=0.3)
    names = list(goodput)
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        values = [goodput[name].get(phase, 0.0) for phase, _ in phases]
        bars.bar([i + j * width for i in range(len(phases))], values, width, label=name)
    bars.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(phases))])
    bars.set_xticklabels([phase for phase, _ in phases])
    bars.axhline(0.85, color="tab:red", linestyle="--", linewidth=0.8, label="0.85 goal at 2x")
    bars.set_ylabel("goodput, share of capacity")
    bars.set_title("goodput per phase")
    bars.legend(fontsize="small")
    bars.grid(axis="y", alpha=0.3)
    return _save(figure, plt, path)


def _save(figure: Any, plt: Any, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
