"""Where a study lives, and how a crashed worker's trial is found and retried.

`--storage`:
* nothing: `sqlite:///<study folder>/study.db` (one machine, a few workers);
* `sqlite:///PATH`, `postgresql://user:pass@host:port/db`, `mysql+pymysql://...`: an RDB storage.
  PostgreSQL is the one for many workers on many machines. Never SQLite on NFS (its locks are unreliable);
* `journal:PATH` or a path ending in `.journal` / `.log`: an append-only Optuna journal file, usable
  from many machines on a shared filesystem (file locks via a lock directory beside the file).

Liveness: every running trial records a heartbeat every `heartbeat` seconds. Any worker that starts a
trial first marks the trials whose heartbeat is older than `grace` seconds FAILED and re-queues each one
(same parameters, at most `max_retry` times). So a worker killed with SIGKILL, or a machine that died,
leaves a trial that the next worker (or the re-run of the command) fails and retries. RDB storages have
this built in; for the journal, `HeartbeatJournalStorage` adds it (heartbeats as trial system attrs).
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import TrialState

from ..config.secrets import redact
from .defaults import GRACE_S, HEARTBEAT_S, MAX_RETRY

try:  # Optuna >= 4.9 renamed the retry callback and its RDBStorage argument
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryStale

    _STALE_ARG = "heartbeat_stale_trial_callback"
except ImportError:
    from optuna.storages import RetryFailedTrialCallback as RetryStale

    _STALE_ARG = "failed_trial_callback"

HEARTBEAT_ATTR = "streamseg:heartbeat"
RDB_PREFIXES = ("sqlite:", "postgresql", "postgres:", "mysql", "oracle", "mssql")


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal storage with the heartbeat protocol of `RDBStorage`, so Optuna's `optimize` records
    heartbeats and fails stale trials with it exactly as with a database.

    The heartbeat is the wall-clock time (seconds since the epoch) in a trial system attribute; machines
    sharing a journal need clocks within `grace` seconds of each other."""

    def __init__(self, path: str | Path, heartbeat: int, grace: int, max_retry: int) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # the open(O_EXCL) lock works on NFS, unlike flock
        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        super().__init__(backend)
        self._heartbeat_interval = heartbeat
        self._grace = grace
        with quiet_experimental():
            self._stale_callback = RetryStale(max_retry=max_retry)

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:
            pass  # another worker already declared this trial stale; the trial's own end will fail too

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None:  # not yet beaten: judge by the start time
                beat = t.datetime_start.timestamp() if t.datetime_start else now
            if now - float(beat) > self._grace:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_callback

    get_failed_trial_callback = get_heartbeat_stale_trial_callback  # its name before Optuna 4.9


def is_journal(url: str) -> bool:
    return url.startswith("journal:") or url.endswith((".journal", ".log"))


def default_url(study_dir: Path) -> str:
    # sqlite URLs are sqlite:/// + path, so an absolute path gives four slashes
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def open_storage(url: str | None, study_dir: Path, heartbeat: int = HEARTBEAT_S, grace: int = GRACE_S,
                 max_retry: int = MAX_RETRY) -> tuple[BaseStorage, str]:
    """The storage behind `--storage` (see the module docstring) and its URL (with any password in it:
    show it through `streamseg.config.redact`).

    heartbeat, grace: seconds between heartbeats of a running trial, and the silence after which a
    trial counts as dead (several heartbeats, so a busy machine is not mistaken for a dead one).
    max_retry: re-queues of one trial's parameters after its worker died."""
    if grace <= heartbeat:
        raise ValueError(f"--grace ({grace} s) must be longer than --heartbeat ({heartbeat} s)")
    study_dir.mkdir(parents=True, exist_ok=True)
    url = url or default_url(study_dir)
    if is_journal(url):
        path = Path(url.removeprefix("journal:"))
        return HeartbeatJournalStorage(path, heartbeat, grace, max_retry), f"journal:{path}"
    if not url.startswith(RDB_PREFIXES):
        raise ValueError(
            f"--storage {redact(url)!r}: expected sqlite:///PATH, postgresql://USER:PASS@HOST:PORT/DB, "
            "mysql+pymysql://..., or journal:PATH (an Optuna journal file)"
        )
    url = _postgres_driver(url)
    engine_kwargs = {}
    if url.startswith("sqlite:"):
        # wait for another worker's write lock instead of failing at once (sqlite3 default: 5 s)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}  # survive a database restart or idle disconnects
    # workers started together on a fresh database all create Optuna's tables; PostgreSQL then fails
    # all but one with a duplicate type or table, SQLite with a UNIQUE constraint on alembic_version
    # (both write the schema version row). Tables are created only if missing, so a retry works.
    attempts = 5
    for attempt in range(attempts):
        try:
            with quiet_experimental():
                storage = RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat,
                    grace_period=grace,
                    **{_STALE_ARG: RetryStale(max_retry=max_retry)},
                )
            return storage, url
        except Exception as e:
            text = str(e).lower()
            if attempt == attempts - 1 or not any(m in text for m in ("already exists", "duplicate", "unique constraint")):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _postgres_driver(url: str) -> str:
    """`postgresql://` with the driver that is installed: SQLAlchemy >= 2.1 means psycopg 3 by it, 2.0
    means psycopg2; either works, so name whichever is importable instead of failing on the other."""
    import importlib.util

    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            rest = url[len(scheme):]
            for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
                if importlib.util.find_spec(module) is not None:
                    return f"postgresql+{driver}://{rest}"
            raise ValueError(f"--storage {redact(url)}: PostgreSQL needs a driver: pip install 'psycopg[binary]' "
                             "(or psycopg2-binary)")
    return url


@contextmanager
def quiet_experimental():
    """Silence Optuna's ExperimentalWarning (heartbeats are experimental, and used on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
