"""The hook to D2D weight loading: ``load(targets, seeds) -> report`` (``report.ok``, ``report.reason``).

The loader is ``hyperflexis_sglang.weights.orchestrate.load_from_peers`` (another
part of this project). Where it is not installed, ``default_loader()`` returns
None and the controller starts new instances with weights from disk, saying so
in the action's result (``link_steps``).
"""

from __future__ import annotations


def default_loader():
    try:
        from ..weights.orchestrate import load_from_peers
    except ImportError:
        return None

    def load(targets: list[str], seeds: list[str]):
        return load_from_peers(list(targets), list(seeds))

    return load
