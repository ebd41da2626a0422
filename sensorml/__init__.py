"""The edge: config, windows, features, bundles, scoring, decisions, the gateway, the buffer."""

__version__ = "0.1.0"
