"""The load engine: Locust as a child process, the recording users, the collector that merges workers,
the sampler, the embedded target.
"""
