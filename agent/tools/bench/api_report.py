"""The figures of ``edge-agent bench api``: median ratios of interleaved rounds, absolute
µs per request, and the README table (``--markdown``)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

# key, what it compares, goal (None: reported only)
RATIOS: tuple[tuple[str, str, str | None], ...] = (
    ("native_vs_inproc", "native client (regions) / in-process loop, requests per s", None),
    ("http_shm_vs_inproc", "HTTP + shared memory / in-process loop, requests per s", None),
    ("native_vs_echo", "native client / native echo of the same size", ">= 0.6"),
    ("http_vs_echo", "HTTP + shared memory / HTTP echo of the same size", ">= 0.5"),
    ("copied_bytes_per_request", "tensor bytes the server copied per shared-memory request",
     "0"),
    ("large_vs_small_overhead", "cost beyond model time, 602 KB / 256 B input (HTTP + shm)",
     "<= 1.2"),
    ("large_vs_small_overhead_native", "the same on the native path", "<= 1.2"),
    ("json_vs_shm", "HTTP with JSON tensors / HTTP + shared memory, requests per s", None),
    ("results_stream_overhead", "loop with the result stream on / off, inferences per s",
     ">= 0.95"),
)


class _Sample(Protocol):
    @property
    def per_s(self) -> float: ...

    @property
    def latency_us(self) -> float: ...

    @property
    def overhead_us(self) -> float: ...

    @property
    def model_us(self) -> float: ...


def _median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    return round(statistics.median(x / y for x, y in zip(a, b, strict=True)), 3)


def summarise(samples: Mapping[str, Sequence[_Sample]], *, shm_copied: int, shm_requests: int,
              alloc: Mapping[str, float], stream: float | None) -> dict[str, Any]:
    """The benchmark's JSON: ratios first, then the absolute figures behind them."""

    def rate(name: str) -> list[float]:
        return [s.per_s for s in samples[name]]

    def overhead(name: str) -> list[float]:
        return [s.overhead_us for s in samples[name]]

    result: dict[str, Any] = {
        "native_vs_inproc": _median_ratio(rate("native_small"), rate("inproc")),
        "http_shm_vs_inproc": _median_ratio(rate("http_shm_small"), rate("inproc")),
        "native_vs_echo": _median_ratio(rate("native_small"), rate("native_echo")),
        "http_vs_echo": _median_ratio(rate("http_shm_small"), rate("http_echo")),
        "copied_bytes_per_request": round(shm_copied / shm_requests, 3) if shm_requests
        else None,
        "large_vs_small_overhead": _median_ratio(overhead("http_shm_large"),
                                                 overhead("http_shm_small")),
        "large_vs_small_overhead_native": _median_ratio(overhead("native_large"),
                                                        overhead("native_small")),
        "json_vs_shm": _median_ratio(rate("http_json_small"), rate("http_shm_small")),
        "results_stream_overhead": None if stream is None else round(stream, 3),
        "alloc_bytes_per_request": dict(alloc),
        "us_per_request": {name: round(1e6 / statistics.median(rate(name)), 1)
                           for name in samples},
        "latency_us": {name: round(statistics.median(s.latency_us for s in rows), 1)
                       for name, rows in samples.items() if name != "inproc"},
        "overhead_us": {name: round(statistics.median(overhead(name)), 1)
                        for name in samples if name != "inproc"},
        "model_us": {name: round(statistics.median(s.model_us for s in rows), 1)
                     for name, rows in samples.items()
                     if any(s.model_us for s in rows)},
        "throughput_per_s": {name: round(statistics.median(rate(name))) for name in samples},
        "shm_requests": shm_requests,
    }
    return result


def markdown_table(result: Mapping[str, Any]) -> str:
    """The README's table of one run: every ratio with its goal, then µs per request."""
    lines = ["| measure | value | goal |", "|---|---|---|"]
    for key, what, goal in RATIOS:
        value = result.get(key)
        shown = "n/a" if value is None else f"{value}"
        lines.append(f"| `{key}`: {what} | {shown} | {goal or '-'} |")
    lines += ["", "| path | requests/s | µs per request | median latency (µs) | median beyond "
              "model time (µs) | median model time (µs) | server allocation per request (B) |",
              "|---|---|---|---|---|---|---|"]
    for name, us in result.get("us_per_request", {}).items():
        cells = [result.get(key, {}).get(name, "-") for key in (
            "throughput_per_s", "latency_us", "overhead_us", "model_us",
            "alloc_bytes_per_request")]
        lines.append(f"| {name} | {cells[0]} | {us} | " + " | ".join(map(str, cells[1:])) + " |")
    lines += ["", f"{result.get('backend')} backend ({result.get('runtime')}), "
                  f"{result.get('machine')}; {result.get('rounds')} rounds of "
                  f"{result.get('seconds_per_path')} s per path; cpu pinning: "
                  f"{result.get('cpu_pinning')}."]
    return "\n".join(lines)
