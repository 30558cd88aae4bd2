"""Counters and histograms for the event loop's thread only, exposed through
prometheus_client's metric families at scrape time (``supervisor/metrics.py``).

Why not prometheus_client's own ``Counter`` and ``Histogram``: each ``inc`` and
``observe`` takes a lock and walks a few method calls, which is the larger part of what
the metrics cost per model or tool call (measured with callgrind, README "Metrics"). Every
increment here happens on the daemon's event loop, as does every scrape, so a plain
``cell.value += x`` is safe and is all a call costs: a label set's ``Cell`` or ``Bins`` is
looked up once and kept by the caller (pre-bound, like prometheus_client's ``labels()``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

__all__ = ("Bins", "Cell", "LoopCounter", "LoopHistogram")


class Cell:
    """One counter value; add to ``value`` (never subtract)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class Bins:
    """One histogram's buckets (not cumulative: cumulated at scrape), sum and count."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, as Prometheus' `le` (less or equal).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class LoopCounter:
    """A counter family with labels; ``labels(...)`` gives the ``Cell`` of one label set."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.cells: dict[tuple[str, ...], Cell] = {}

    def labels(self, *values: str) -> Cell:
        cell = self.cells.get(values)
        if cell is None:
            cell = self.cells[values] = Cell()
        return cell

    def collect(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, cell in self.cells.items():
            family.add_metric(list(values), cell.value)
        return family


class LoopHistogram:
    """A histogram family with labels and fixed buckets (upper bounds, ascending)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self.bins: dict[tuple[str, ...], Bins] = {}

    def labels(self, *values: str) -> Bins:
        bins = self.bins.get(values)
        if bins is None:
            bins = self.bins[values] = Bins(self.bounds)
        return bins

    def collect(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, bins in self.bins.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), bins.counts, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric(list(values), buckets, sum_value=bins.total)
        return family
