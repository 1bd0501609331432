"""Contract checks against the running stack, for `tooloo test --live`.

Kept apart from the Phase 6 suite (which needs nothing running) so that neither `pytest`
nor a plain `tooloo test` collects them; the runner hands them the configuration through
the `stack` fixture of `LiveStack`.
"""

from __future__ import annotations

import pytest

from tooloo_cli.config import LoadedConfig


class LiveStack:
    """A pytest plugin giving the live checks the configuration of the stack to check."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded

    @pytest.fixture
    def stack(self) -> LoadedConfig:
        return self.loaded
