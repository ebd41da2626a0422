"""Suite-wide settings: hypothesis runs derandomized under CI (a property test found a
failure once means a bug to fix, not a coin to flip again), and without per-example
deadlines (this 2-core machine is shared by process-level tests)."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
