"""Defaults shared by `streamseg search` and the library (no Optuna import: the CLI parser reads them)."""

HEARTBEAT_S = 10  # seconds between heartbeats of a running trial (--heartbeat)
GRACE_S = 120  # seconds without a heartbeat after which a trial's worker is taken as dead (--grace)
MAX_RETRY = 2  # re-queues of a dead worker's trial (--max-retry)
