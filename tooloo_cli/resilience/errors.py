"""The root of every error the resilience modules raise on their own account.

    try:
        await breaker.call(fetch)
    except ResilienceError as exc:      # CircuitOpenError, CallTimeoutError, PoolError, ...
        degrade(exc)

Errors of the caller (a bad argument: ValueError, a value that is not JSON: TypeError)
and of the dependency itself (whatever the guarded call raised) pass through as they are.
"""

from __future__ import annotations


class ResilienceError(Exception):
    """Base of CircuitOpenError, CallTimeoutError, PoolError (and its subclasses) and CorruptDatabaseError."""
