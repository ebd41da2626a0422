"""``sensorml demo``: the whole loop on one machine, and its HTML report.
"""
