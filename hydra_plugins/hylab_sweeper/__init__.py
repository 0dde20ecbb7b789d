"""Hydra instantiates sweeper plugins only from the `hydra_plugins` namespace, and imports every
module there at start-up: this shim stays light and the sweep loop lives in hylab/sweeper.py."""

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper with resumable, shareable studies (see hylab/sweeper.py)."""

    def __init__(self, sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate, search_space, custom_search_space, params):
        from hylab.sweeper import ResumableOptunaSweeperImpl

        self.sweeper = ResumableOptunaSweeperImpl(
            sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate, search_space, custom_search_space, params
        )
