"""The model slot: the live model and a candidate in shadow, held by one object.

The gateway holds one :class:`ModelSlot`; the fast path is given the same object and
reads ``slot.live`` once per window (and ``slot.shadow`` after its live decision).
Nothing else holds a model. Everything that changes them runs off the fast path:

- :meth:`ModelSlot.load`: the configured bundle (``model.bundle``), loaded and verified
  (signature in a child process, feature spec, hash), at start, on SIGHUP / ``POST
  /reload``, and when the bundle's files change (the watch thread, :meth:`start`);
- :meth:`ModelSlot.check_candidate`: a bundle the sync job staged as the bundle store's
  ``candidate`` link runs in shadow beside the live model
  (:class:`sensorml.gateway.shadow.ShadowRunner`), then is promoted or rolled back with
  the reason recorded.

A swap is one reference assignment of a whole, frozen
:class:`~sensorml.edge.fastpath.ActiveModel` (scorer, decider, name and version
together): a window is scored and decided by the model it read when it started, never
by half of a swap, and the fast path pays one attribute read for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from sensorml.bundles.staging import CANDIDATE, BundleStore
from sensorml.config import DecisionConfig, DeployConfig, ModelConfig
from sensorml.edge.decider import Decider, Thresholds
from sensorml.edge.fastpath import ActiveModel
from sensorml.edge.features import FeatureSpec
from sensorml.errors import BundleError, SensormlError
from sensorml.gateway.shadow import ShadowResult, ShadowRunner

__all__ = ["ModelSlot", "file_mtime"]

log = logging.getLogger("sensorml.gateway.process")


class ModelSlot:
    """The live model, the candidate in shadow, and every change between them."""

    def __init__(self, model: ModelConfig, decision: DecisionConfig, deploy: DeployConfig,
                 spec: FeatureSpec, store: BundleStore, *,
                 record_event: Callable[[str, dict], None],
                 on_refused: Callable[[], None] = lambda: None) -> None:
        #: the model the fast path scores with (None: hard limits and watchdog only)
        self.live: ActiveModel | None = None
        #: the candidate the fast path offers each scored window to, while one runs
        self.shadow: ShadowRunner | None = None
        #: why the last load was refused (None after a successful load or promotion)
        self.error: str | None = None
        #: the last finished shadow run's result
        self.last_shadow: dict | None = None
        self.model_cfg, self.decision, self.deploy = model, decision, deploy
        self.spec = spec
        self.store = store
        self._record = record_event
        self._refused = on_refused
        self._bundle_mtime: tuple = ()
        self._candidate_seen: tuple | None = None
        self._lock = threading.RLock()
        self._reload = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ loading
    def load(self) -> bool:
        """Load and check the configured bundle; swap it in only if every check passes."""
        bundle = self.model_cfg.bundle
        if bundle is None:
            return False
        with self._lock:
            self._bundle_mtime = file_mtime(bundle)
            try:
                scorer, man = self._open(bundle)
            except (BundleError, SensormlError, OSError) as e:
                self.error = str(e)
                live = self.live
                kept = (f"; keeping model {live.version}" if live
                        else "; no model: hard limits and watchdog only")
                log.error("model refused: %s%s", e, kept)
                self._record("model", {"action": "refused", "error": str(e)[:500]})
                self._refused()
                return False
            new = ActiveModel(scorer, self.decider_for(man), str(man.version), str(man.name))
            old = self._swap(new)
        self._record("model", {"action": "loaded", "name": new.name, "version": new.version,
                               "previous": old.version if old else None})
        log.info("model %s %s loaded", new.name, new.version)
        return True

    def _open(self, path: Path):
        """(scorer, manifest) of a verified bundle; BundleError/SensormlError/OSError if not."""
        from sensorml.bundles.bundle import load_bundle
        from sensorml.bundles.verifychild import verify_in_child
        from sensorml.edge.scorer import Scorer

        mc = self.model_cfg
        bundle = load_bundle(path, trusted_keys=list(mc.trusted_keys), verify=verify_in_child,
                             allow_unsigned=mc.allow_unsigned, expected_spec=self.spec)
        return Scorer(bundle), bundle.manifest

    def decider_for(self, manifest) -> Decider:
        """A fresh decider with the bundle's thresholds, each overridden by ``[decision]``."""
        th = manifest.thresholds
        d = self.decision
        thresholds = Thresholds(
            warn=d.warn if d.warn is not None else th["warn"],
            alarm=d.alarm if d.alarm is not None else th["alarm"],
            trip=d.trip if d.trip is not None else th["trip"],
        )
        return Decider(thresholds, k=d.k, n=d.n, hysteresis=d.hysteresis)

    def _swap(self, new: ActiveModel) -> ActiveModel | None:
        old = self.live
        self.live = new  # one reference assignment: atomic for the fast path
        self.error = None
        return old

    # ------------------------------------------------------------ watching
    def request_reload(self) -> None:
        """Load the configured bundle again at the watch thread's next round."""
        self._reload.set()

    def start(self) -> None:
        """Start the watch thread: reloads on request or change, follows the candidate."""
        self._thread = threading.Thread(target=self._watch, name="model-reload", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.model_cfg.watch_s):
            self.poll()

    def poll(self) -> None:
        """One round of the watch thread: reload if asked or changed, then the candidate."""
        bundle = self.model_cfg.bundle
        with self._lock:
            changed = bundle is not None and file_mtime(bundle) != self._bundle_mtime
            if self._reload.is_set() or changed:
                self._reload.clear()
                self.load()
        try:
            self.check_candidate()
        except Exception:  # noqa: BLE001 - redeployment must never stop the gateway
            log.exception("checking the candidate bundle")

    def close(self) -> None:
        """Stop the watch thread and abandon a shadow run."""
        self._stop.set()
        shadow = self.shadow
        if shadow is not None:
            shadow.stop()

    # ------------------------------------------------------------ shadow
    def check_candidate(self) -> None:
        """Start (or stop) a shadow run when the store's ``candidate`` link changes."""
        cand = self.store.link(CANDIDATE)
        if cand == self._candidate_seen:
            return
        self._candidate_seen = cand
        old = self.shadow
        if old is not None:  # replaced or withdrawn: abandon the old run
            self.shadow = None
            old.stop()
        if cand is None:
            return
        name, version = cand
        live = self.live
        if live is not None and (live.name, live.version) == cand:
            return
        dc = self.deploy
        try:
            scorer, man = self._open(self.store.path(name, version))
        except (SensormlError, OSError) as e:
            self._rolled_back(name, version, f"cannot load: {e}")
            return
        runner = ShadowRunner(scorer, self.decider_for(man), name=name, version=version,
                              windows=dc.shadow_windows, max_alarm_rate=dc.max_alarm_rate,
                              rate_factor=dc.rate_factor, on_done=self._shadow_done)
        if live is None:  # nothing to compare with: the candidate is better than no model
            self._promote(runner, "no live model to compare with")
            return
        self.shadow = runner.start()
        self._record("model", {"action": "shadow", "name": name, "version": version,
                               "live": live.version, "windows": dc.shadow_windows})
        log.info("model %s %s in shadow beside %s for %d windows", name, version, live.version,
                 dc.shadow_windows)

    def _shadow_done(self, result: ShadowResult) -> None:
        """Called by the shadow thread with its verdict on the candidate."""
        runner = self.shadow
        if runner is None or runner.version != result.version:
            return
        self.shadow = None
        self.last_shadow = result.to_dict()
        if result.promote:
            self._promote(runner, result.reason)
        else:
            self._rolled_back(result.name, result.version, result.reason, result.to_dict())

    def _promote(self, runner: ShadowRunner, reason: str) -> None:
        with self._lock:
            self.store.activate(runner.name, runner.version, by="shadow")
            new = ActiveModel(runner.scorer, runner.decider, runner.version, runner.name)
            old = self._swap(new)
            if self.model_cfg.bundle is not None:  # `current` moved: not a change to reload
                self._bundle_mtime = file_mtime(self.model_cfg.bundle)
        self._record("model", {"action": "promoted", "name": new.name, "version": new.version,
                               "previous": old.version if old else None, "reason": reason})
        log.info("model %s %s promoted: %s", new.name, new.version, reason)

    def _rolled_back(self, name: str, version: str, reason: str, detail: dict | None = None) -> None:
        self.store.reject(name, version, reason, by="shadow")
        self._record("model", {"action": "rolled_back", "name": name, "version": version,
                               "reason": reason[:500], "shadow": detail})
        self._refused()
        log.warning("model %s %s rolled back: %s", name, version, reason)

    # ------------------------------------------------------------ status
    def status(self) -> dict:
        """``model``, ``model_error`` and the shadow's state for ``/status``."""
        live, shadow = self.live, self.shadow
        return {"model": {"name": live.name, "version": live.version} if live else None,
                "model_error": self.error,
                "shadow": shadow.progress() if shadow else None,
                "last_shadow": self.last_shadow}


def file_mtime(bundle: Path) -> tuple:
    """What changes when a bundle is replaced: its resolved path (a swapped symlink) and
    the manifest's and model's modification times."""
    try:
        real = bundle.resolve()
        files = (real / "manifest.json", real / "model.onnx") if real.is_dir() else (real,)
        return (str(real), *(f.stat().st_mtime_ns for f in files))
    except OSError:
        return ()
