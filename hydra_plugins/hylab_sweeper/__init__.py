"""Hydra instantiates sweeper plugins only from the `hydra_plugins` namespace, and imports every
module there at start-up: this shim stays light and the sweep loop lives in hylab/sweeper.py."""

from hydra.plugins.sweeper import Sweeper


class ResumableOptunaSweeper(Sweeper):
    """Optuna with resumable, shareable studies (see hylab/sweeper.py); settings in
    conf/hydra/sweeper/hylab_optuna.yaml."""

    def __init__(self, **settings) -> None:
        from hylab.sweeper import ResumableOptunaSweep

        self.sweeper = ResumableOptunaSweep(**settings)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
