"""Python helpers for fencelock, the Redis module with native distributed locks:
Lock, RWLock and Semaphore with fencing tokens, server-side waiting, a lease keeper and
a lost-lock signal, on top of redis-py. `fencelock.asyncio` has the same for asyncio."""

from redis.exceptions import LockError, LockNotOwnedError

from ._core import DEFAULT_LEASE, RENEW_FRACTION, WAIT_MARGIN, StaleTokenError
from ._sync import Lock, RWLock, Semaphore, check_fence, fenced

__version__ = "0.1.0"

__all__ = [
    "Lock",
    "RWLock",
    "Semaphore",
    "fenced",
    "check_fence",
    "LockError",
    "LockNotOwnedError",
    "StaleTokenError",
    "DEFAULT_LEASE",
    "RENEW_FRACTION",
    "WAIT_MARGIN",
]
