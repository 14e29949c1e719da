"""Validated rows -> the model's input frame, exactly as `features.build.build_features` makes it.

`build_features` builds its frame column by column through pandas: ~7 ms however few rows, more
than the model call itself. The service builds the same frame from numpy arrays in one go and
evaluates the derived features with the same parsed expressions (`include.mlops.features.expressions`).
Equality is not assumed: at start-up the fast path is compared with `build_features` on probe
rows (edge values, missing optionals, zero denominators), and any difference makes the service
use `build_features` itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.spec import DatasetSpec

log = logging.getLogger(__name__)


class FrameBuilder:
    def __init__(self, spec: DatasetSpec, verify: bool = True) -> None:
        from include.mlops.features.build import derived_expressions, model_features

        self.spec = spec
        self.columns = model_features(spec)
        self.raw = list(spec.features)
        self._derived = derived_expressions(spec)
        self.fast = True
        if verify:
            self.fast = self._verify()

    # -- building ---------------------------------------------------------------------------
    def frame(self, rows: list[list[Any]]) -> pd.DataFrame:
        """Rows of raw feature values in spec order (NaN / None for missing) -> model frame."""
        return self._fast(rows) if self.fast else self._slow(rows)

    def _fast(self, rows: list[list[Any]]) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        from include.mlops.features.build import derived_values

        n = len(rows)
        cols = list(zip(*rows, strict=True)) if rows else [()] * len(self.raw)
        data: dict[str, Any] = {}
        for f, values in zip(self.raw, cols, strict=True):
            if f.is_numeric:
                data[f.name] = np.array(values, dtype=np.float64) if n else np.empty(0, dtype=np.float64)
            else:
                arr = np.empty(n, dtype=object)
                arr[:] = values
                data[f.name] = arr
        for name, expr in self._derived:
            data[name] = derived_values(expr, data, n)
        return pd.DataFrame(data, columns=self.columns, copy=False)

    def _slow(self, rows: list[list[Any]]) -> pd.DataFrame:
        import pandas as pd

        from include.mlops.features.build import build_features

        raw = pd.DataFrame(rows, columns=[f.name for f in self.raw])
        return build_features(raw, self.spec)[self.columns].reset_index(drop=True)

    # -- the equality check ---------------------------------------------------------------------
    def probe_rows(self, n: int = 64, seed: int = 0) -> list[list[Any]]:
        """Rows that stress the expressions: range ends, zeros, missing optional values."""
        import math
        import random

        rnd = random.Random(seed)
        rows = []
        for i in range(n):
            row: list[Any] = []
            for f in self.raw:
                if not f.required and i % 5 == 4:
                    row.append(math.nan if f.is_numeric else None)
                elif f.is_numeric:
                    lo, hi = f.range if f.range else (0.0, 100.0)
                    choice = i % 4
                    v = (
                        lo
                        if choice == 0
                        else hi
                        if choice == 1
                        else 0.0
                        if lo <= 0 <= hi and choice == 2
                        else rnd.uniform(lo, hi)
                    )
                    row.append(float(round(v)) if f.type == "int" else float(v))
                else:
                    values = f.values or ("x",)
                    row.append(values[i % len(values)])
            rows.append(row)
        return rows

    def _verify(self) -> bool:
        import pandas as pd

        rows = self.probe_rows()
        try:
            for subset in (rows, rows[:1]):
                pd.testing.assert_frame_equal(self._fast(subset), self._slow(subset), check_exact=False, rtol=1e-12)
        except Exception as exc:  # a difference
            log.warning("fast feature path differs from build_features (%s): using build_features", exc)
            return False
        return True
