"""Store and forward: the sync job, the batch codec, the heartbeat and the cloud stores
(``file://``, ``s3://``) behind :func:`sensorml.sync.stores.open_store`.
"""
