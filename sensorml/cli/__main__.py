"""``python -m sensorml.cli``: the same as the ``sensorml`` command."""

import sys

from sensorml.cli import main

if __name__ == "__main__":
    sys.exit(main())
