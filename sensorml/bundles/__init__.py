"""Model bundles: the signed bundle itself, signatures and the child process that checks
them, staging on the gateway, the signed desired state and the fetch step of the sync job.
"""
