"""The gateway's side of safe redeployment: a candidate bundle staged by the sync job
(the bundle store's ``candidate`` link) runs in shadow beside the live model, then is
promoted or rolled back with the reason recorded. A mixin of
:class:`sensorml.gateway.process.Gateway` (it uses its store, model, fast path, metrics and
config); the shadow run itself is :class:`sensorml.gateway.shadow.ShadowRunner`."""

from __future__ import annotations

import logging
from pathlib import Path

from sensorml.bundles.staging import CANDIDATE
from sensorml.edge.fastpath import ActiveModel
from sensorml.errors import SensormlError

__all__ = ["ShadowDeploy"]

log = logging.getLogger("sensorml.gateway.process")


class ShadowDeploy:
    def _check_candidate(self) -> None:
        """Start (or stop) a shadow run when the store's ``candidate`` link changes."""
        from sensorml.bundles.bundle import load_bundle
        from sensorml.bundles.verifychild import verify_in_child
        from sensorml.edge.scorer import Scorer
        from sensorml.gateway.shadow import ShadowRunner

        cand = self.store.link(CANDIDATE)
        if cand == self._candidate_seen:
            return
        self._candidate_seen = cand
        if self.shadow is not None:  # replaced or withdrawn: abandon the old run
            self.fast.shadow = None
            self.shadow.stop()
            self.shadow = None
        if cand is None:
            return
        name, version = cand
        live = self.model
        if live is not None and (live.name, live.version) == cand:
            return
        mc, dc = self.cfg.model, self.cfg.deploy
        try:
            bundle = load_bundle(self.store.path(name, version), trusted_keys=list(mc.trusted_keys), verify=verify_in_child,
                                 allow_unsigned=mc.allow_unsigned, expected_spec=self.spec)
            scorer = Scorer(bundle)
        except (SensormlError, OSError) as e:
            self._rolled_back(name, version, f"cannot load: {e}")
            return
        runner = ShadowRunner(scorer, self._decider(bundle.manifest), name=name, version=version,
                              windows=dc.shadow_windows, max_alarm_rate=dc.max_alarm_rate,
                              rate_factor=dc.rate_factor, on_done=self._shadow_done)
        if live is None:  # nothing to compare with: the candidate is better than no model
            self._promote(runner, "no live model to compare with")
            return
        self.shadow = runner.start()
        self.fast.shadow = runner
        self._record_event("model", {"action": "shadow", "name": name, "version": version,
                                     "live": live.version, "windows": dc.shadow_windows})
        log.info("model %s %s in shadow beside %s for %d windows", name, version, live.version,
                 dc.shadow_windows)

    def _shadow_done(self, result) -> None:
        """Called by the shadow thread with its verdict on the candidate."""
        runner = self.shadow
        if runner is None or runner.version != result.version:
            return
        self.fast.shadow = None
        self.shadow = None
        self.last_shadow = result.to_dict()
        if result.promote:
            self._promote(runner, result.reason)
        else:
            self._rolled_back(result.name, result.version, result.reason, result.to_dict())

    def _promote(self, runner, reason: str) -> None:
        with self._model_lock:
            self.store.activate(runner.name, runner.version, by="shadow")
            new = ActiveModel(runner.scorer, runner.decider, runner.version, runner.name)
            old = self._swap_model(new)
            if self.cfg.model.bundle is not None:  # `current` moved: not a change to reload
                self._bundle_mtime = file_mtime(self.cfg.model.bundle)
        self.metrics.model_info(new.name, new.version)
        self._record_event("model", {"action": "promoted", "name": new.name, "version": new.version,
                                     "previous": old.version if old else None, "reason": reason})
        log.info("model %s %s promoted: %s", new.name, new.version, reason)

    def _rolled_back(self, name: str, version: str, reason: str, detail: dict | None = None) -> None:
        self.store.reject(name, version, reason, by="shadow")
        self._record_event("model", {"action": "rolled_back", "name": name, "version": version,
                                     "reason": reason[:500], "shadow": detail})
        self.metrics.model_refusals.inc()
        log.warning("model %s %s rolled back: %s", name, version, reason)


def file_mtime(bundle: Path) -> tuple:
    """What changes when a bundle is replaced: its resolved path (a swapped symlink) and
    the manifest's and model's modification times."""
    try:
        real = bundle.resolve()
        files = (real / "manifest.json", real / "model.onnx") if real.is_dir() else (real,)
        return (str(real), *(f.stat().st_mtime_ns for f in files))
    except OSError:
        return ()
