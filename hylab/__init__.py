"""Support code for hylab runs: config resolvers, the task runner, run records and the run store.

Nothing here imports torch or lightning at module level: config-only paths stay fast.
"""
