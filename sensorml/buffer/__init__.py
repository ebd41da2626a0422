"""The local SQLite buffer: schema and migrations, space keeping (size cap, free-space
reserve), the recorder that writes it off the fast path, and operators' labels.
"""
