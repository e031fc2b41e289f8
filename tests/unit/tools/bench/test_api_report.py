"""The figures of ``edge-agent bench api``: medians of per-round ratios, and the README
table that ``--markdown`` prints."""

from __future__ import annotations

from dataclasses import dataclass

from agent.tools.bench.api_report import RATIOS, markdown_table, summarise


@dataclass
class S:
    per_s: float
    latency_us: float = 0.0
    overhead_us: float = 0.0
    model_us: float = 0.0


def _samples() -> dict[str, list[S]]:
    # Three rounds; the second is disturbed for every path, as a noisy machine does.
    return {
        "inproc": [S(100_000), S(50_000), S(100_000)],
        "native_small": [S(5_000, 200, 180, 20), S(1_000, 900, 880, 20), S(4_000, 250, 230, 20)],
        "native_large": [S(4_000, 260, 200, 60), S(900, 1_000, 940, 60), S(3_500, 300, 240, 60)],
        "native_echo": [S(10_000, 100, 100), S(2_000, 500, 500), S(8_000, 125, 125)],
        "http_shm_small": [S(2_000, 500, 480, 20), S(500, 2_000, 1_980, 20),
                           S(2_000, 500, 480, 20)],
        "http_shm_large": [S(1_800, 560, 500, 60), S(450, 2_100, 2_040, 60),
                           S(1_800, 560, 500, 60)],
        "http_json_small": [S(1_000, 1_000, 980, 20), S(400, 2_500, 2_480, 20),
                            S(1_000, 1_000, 980, 20)],
        "http_echo": [S(4_000, 250, 250), S(1_000, 1_000, 1_000), S(4_000, 250, 250)],
    }


def test_ratios_are_medians_of_per_round_ratios() -> None:
    result = summarise(_samples(), shm_copied=0, shm_requests=1000,
                       alloc={"native_small": 1.0}, stream=0.97)
    # native/echo per round: 0.5, 0.5, 0.5; native/inproc: 0.05, 0.02, 0.04 -> 0.04
    assert result["native_vs_echo"] == 0.5
    assert result["native_vs_inproc"] == 0.04
    assert result["http_vs_echo"] == 0.5
    # overhead large/small per round: 500/480, 2040/1980, 500/480 -> 1.042
    assert result["large_vs_small_overhead"] == 1.042
    assert result["large_vs_small_overhead_native"] == 1.068  # 1.111, 1.068, 1.043
    assert result["json_vs_shm"] == 0.5
    assert result["copied_bytes_per_request"] == 0
    assert result["results_stream_overhead"] == 0.97
    assert result["us_per_request"]["native_small"] == 250.0  # 1e6 / median 4000 per s
    assert "inproc" not in result["overhead_us"]
    assert set(result["model_us"]) == {"native_small", "native_large", "http_shm_small",
                                       "http_shm_large", "http_json_small"}


def test_no_requests_and_no_stream_are_reported_as_missing() -> None:
    result = summarise(_samples(), shm_copied=0, shm_requests=0, alloc={}, stream=None)
    assert result["copied_bytes_per_request"] is None
    assert result["results_stream_overhead"] is None


def test_markdown_table_names_every_ratio_and_path() -> None:
    result = summarise(_samples(), shm_copied=12, shm_requests=4, alloc={"native_small": 96.0},
                       stream=None)
    result.update(backend="dlr", runtime="libdlr.so", machine="x86_64 2 cpu", rounds=3,
                  seconds_per_path=0.5, cpu_pinning="none")
    table = markdown_table(result)
    for key, _what, goal in RATIOS:
        assert f"`{key}`" in table
        if goal:
            assert goal in table
    assert "| 3.0 |" in table  # 12 bytes copied over 4 requests
    assert "| native_small | 4000 | 250.0 | 250 | 230 | 20 | 96.0 |" in table
    assert "n/a" in table  # no result stream
    for name in _samples():
        assert f"| {name} |" in table
    assert "dlr backend (libdlr.so), x86_64 2 cpu; 3 rounds of 0.5 s" in table
