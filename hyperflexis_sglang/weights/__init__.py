"""Device-to-device weight loading: a new instance receives its weights from running peers.

* ``orchestrate.load_from_peers`` (controller; imports neither torch nor SGLang)
* ``agent.WeightAgent`` (next to the parameters: the SGLang plugin's scheduler hook, or ``standalone``)
* ``transport`` / ``tensors`` (torch.distributed gloo/NCCL transfers, bucket packing, checksums)
* planning is pure: ``hyperflexis_sglang.core.weights``
"""

from .orchestrate import LoadReport, WeightLoadError, discover, load_from_peers

__all__ = ["LoadReport", "WeightLoadError", "discover", "load_from_peers"]
