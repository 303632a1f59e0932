"""Campaigns change without a deploy: the campaign file is watched (checked every second through
the scheduler, so tests drive it with the fake clock) and reloaded on change or on SIGHUP. A file
that does not validate is refused with its errors; the campaigns in force stay."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from nudge.errors import CampaignError
from nudge.rules.campaigns import CampaignSet, load_file
from nudge.runtime.hub import Hub
from nudge.runtime.scheduler import LocalTimer

log = logging.getLogger("nudge.reload")

CHECK_EVERY = 1.0  # seconds between looks at the file


class CampaignFile:
    def __init__(self, path: Path, hub: Hub, on_reload: Callable[[CampaignSet], None] | None = None) -> None:
        self.path = path  # the file to watch
        self.hub = hub  # whose engine to replace
        self._seen = self._fingerprint()  # (mtime, size) of the version in force
        self._timer: LocalTimer | None = None  # the next look at the file
        self.reloads = 0  # successful reloads so far
        self.last_error: str | None = None  # the problems of the last refused version
        self.on_reload = on_reload  # called with each campaign set put in force (the admin API's hook)

    def _fingerprint(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def watch(self) -> None:
        """Look at the file every second from now on."""
        self._timer = self.hub.scheduler.call_at(self.hub.clock.now() + CHECK_EVERY, self._check)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _check(self, due: float) -> None:
        fingerprint = self._fingerprint()
        if fingerprint is not None and fingerprint != self._seen:
            self._seen = fingerprint
            self.reload()
        self._timer = self.hub.scheduler.call_at(due + CHECK_EVERY, self._check)

    def reload(self) -> bool:
        """Load the file and put it in force if it is valid; True if it was."""
        try:
            campaign_set = load_file(self.path)
        except CampaignError as exc:
            self.last_error = str(exc)
            log.error("campaign file %s refused, the campaigns in force stay:\n%s", self.path, exc)
            return False
        self.hub.reload(campaign_set)
        if self.on_reload is not None:
            self.on_reload(campaign_set)
        self.reloads += 1
        self.last_error = None
        log.info("campaign file %s reloaded: %d campaigns", self.path, len(campaign_set.campaigns))
        for warning in campaign_set.warnings:
            log.warning("campaign file: %s", warning)
        return True
