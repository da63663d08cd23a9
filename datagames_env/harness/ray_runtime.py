"""Starting Ray: one place, with one retry when a local runtime is slow to come up.

Ray 2.60 gives a starting raylet a fixed 30 s to register with the GCS (``ray/_private/node.py``) and then raises
"The current node timed out during startup". On a loaded two-core machine (CI, a laptop running the test suite in
parallel) that happens now and then although nothing is wrong; a second start succeeds. A cluster address is
never retried: there a timeout means the cluster is not reachable, and the caller says so.
"""

from __future__ import annotations

import logging

STARTUP_TIMEOUT_TEXT = "timed out during startup"
LOCAL_START_ATTEMPTS = 3

log = logging.getLogger(__name__)


def start_ray(address: str | None = None, **init_kwargs) -> None:
    """``ray.init(address, **init_kwargs)`` unless Ray is already up; a local start is tried up to
    ``LOCAL_START_ATTEMPTS`` times when the raylet times out during startup."""
    import ray

    if ray.is_initialized():
        return
    local = address in (None, "local")
    attempts = LOCAL_START_ATTEMPTS if local else 1
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=None if local else address, **init_kwargs)
            return
        except Exception as exc:  # Ray raises a bare Exception for this timeout
            if STARTUP_TIMEOUT_TEXT not in str(exc) or attempt == attempts:
                raise
            log.warning("local Ray runtime timed out during startup (attempt %d of %d); starting it again",
                        attempt, attempts)
            ray.shutdown()
