"""Offline scoring of tables and buffers with the gateway's own scorer and decider, and
the table readers and table features training shares.
"""
