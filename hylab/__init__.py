"""Support code for hylab runs: config resolvers, the task runner, run records and the run store.

Only `hylab.trainer_tasks` imports torch and lightning at module level, and it is imported only
when a Trainer task runs; the other modules import them inside the functions that need them, so
config-only paths (`--cfg job`, the store's hashing, the sweeper) stay fast.
"""
