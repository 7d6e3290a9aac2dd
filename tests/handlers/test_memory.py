"""Bounded memory: the largest events Lambda can deliver (1 MB asynchronous payload, ~750 KB of
gzip) stay within 200 MB of peak RSS in one invocation, the repetitive storm included. Measured
in a fresh interpreter by bench/memory_probe.py (which also prints the figures)."""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import memory_probe

from components.settings import Settings

PEAK_LIMIT_MB = 200


@pytest.mark.parametrize("shape", ["storm", "distinct"])
def test_the_largest_event_of_each_shape_peaks_below_200_mb(shape: str) -> None:
    figures = memory_probe.measure(shape)
    assert figures["gzip_bytes"] <= memory_probe.MAX_GZIP_BYTES
    if shape == "storm":
        assert figures["log_events"] >= 21_000
        assert figures["findings"] == 1
    else:
        assert figures["findings"] == figures["log_events"]
    assert figures["imported"] == figures["findings"]
    assert figures["peak_mb"] <= PEAK_LIMIT_MB, figures


def test_the_default_memory_setting_holds_the_measured_peak() -> None:
    (spec,) = [f for f in fields(Settings) if f.name == "lambda_memory_mb"]
    default = spec.metadata["setting"].default
    assert default >= PEAK_LIMIT_MB
