"""Import Feast without typeguard's start-up cost.

Feast decorates most of its classes with typeguard's `@typechecked`. typeguard 4 instruments each
decorated function by re-reading, re-parsing and recompiling the source of its whole module
(agronholm/typeguard#468), so `import feast` took 12.2 s on the 2-core benchmark machine, 7.3 s
of it typeguard. Every process that touches Feast pays it: the `prepare` task, the scoring
service at start-up, the tests.

`without_typeguard()` swaps `typeguard.typechecked` for a decorator that returns its target
unchanged, before Feast is first imported in the process. Feast's classes then behave the same
except that their run-time argument type checks are gone: a wrong type in a feature definition
fails later, inside Feast, instead of in the constructor. The feature definitions here are
generated from the spec and checked by `feast apply`. MLOPS_FEAST_TYPECHECKS=1 keeps typeguard's
checks, and the slow import.
"""

from __future__ import annotations

import sys
from typing import Any


def _identity(target: Any = None, **_: Any) -> Any:
    """`@typechecked` and `@typechecked(...)` alike: the target, unchanged."""
    return _identity if target is None else target


def without_typeguard() -> bool:
    """Make typeguard's decorator a no-op for Feast; True if it is one now."""
    if "feast" in sys.modules:  # too late for this process: Feast kept what it had
        return getattr(sys.modules.get("typeguard"), "typechecked", None) is _identity
    from include.mlops.config import get_settings

    if get_settings().feast_typechecks:
        return False
    import typeguard

    typeguard.typechecked = _identity  # type: ignore[assignment]
    return True
