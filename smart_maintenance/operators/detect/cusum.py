"""A one-sided CUSUM that holds its statistic, for trends too slow for a window's own deviation.

`S = min(cap, max(0, S + x - k))`: each value above the allowance `k` adds
to the sum, each below takes from it. A slow ramp's residuals sit a little
above the usual for many windows; no single window is remarkable, their sum
is. The cap makes the sum fall back within `cap / k` quiet windows once the
trend is over, instead of holding an alarm open for as long as it grew.

river's `drift.PageHinkley` runs the same test, but it resets itself on the
first detection and exposes only a yes/no: the detector needs the graded sum
while a trend lasts (it scores every window and slows learning as the sum
grows), so the ten lines are kept here.

>>> c = Cusum()
>>> [round(c.update(x, k=0.5, cap=4.0), 1) for x in (0.0, 1.0, 2.0, 2.0, 3.0, -1.0)]
[0.0, 0.5, 2.0, 3.5, 4.0, 2.5]
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Cusum:
    value: float = 0.0

    def update(self, x: float, k: float, cap: float) -> float:
        self.value = min(cap, max(0.0, self.value + x - k))
        return self.value
