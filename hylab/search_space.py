"""A search space from Hydra's override grammar: `choice(...)`, `range(...)`, `interval(...)` and
`tag(log, interval(...))` become optuna distributions, and a trial's parameters become overrides
again."""

from collections.abc import Iterable, Sequence
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial


def distribution(override: Override) -> BaseDistribution | None:
    """The optuna distribution of one sweep override; None for a plain (fixed) value.

    `choice(a,b)` / `a,b` / `shuffle(...)` -> CategoricalDistribution; `interval(a,b)` ->
    FloatDistribution; `int(interval(a,b))` -> IntDistribution; `range(a,b[,step])` (b excluded,
    as in Python) -> IntDistribution, or a stepped FloatDistribution for float bounds;
    `tag(log, ...)` on an interval or a step-1 int range samples in log space.
    """
    if not override.is_sweep_override():
        return None
    sweep = override.value()
    log_scale = "log" in getattr(sweep, "tags", ())
    if override.is_choice_sweep() or (override.is_range_sweep() and sweep.shuffle):
        if log_scale:
            raise ValueError(f"{override.input_line}: tag(log, ...) applies to interval(...) or range(...), not to a choice")
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_interval_sweep():
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return IntDistribution(sweep.start, sweep.end, log=log_scale)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log_scale)
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"{override.input_line}: the range is empty")
        step = abs(sweep.step)
        if log_scale and step != 1:
            raise ValueError(f"{override.input_line}: tag(log, range(...)) needs step 1")
        low, high = min(values), max(values)
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            return IntDistribution(low, high, log=log_scale, step=1 if log_scale else step)
        high = round(low + step * (len(values) - 1), 12)  # float steps: no 0.30000000000000004
        return FloatDistribution(float(low), high, step=float(step))
    raise ValueError(f"{override.input_line}: not a sweep the optuna sweeper supports")


def search_space(overrides: Iterable[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """(distributions by key, fixed overrides) from overrides in Hydra's grammar; a later
    override of a key replaces an earlier one, so the command line wins over the config."""
    space: dict[str, BaseDistribution | str] = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        dist = distribution(override)
        space[override.get_key_element()] = override.input_line if dist is None else dist
    distributions = {k: v for k, v in space.items() if isinstance(v, BaseDistribution)}
    return distributions, [v for v in space.values() if isinstance(v, str)]


def grid_values(name: str, dist: BaseDistribution) -> list:
    """The points of a discrete distribution, for optuna's GridSampler."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        return [round(dist.low + i * dist.step, 12) for i in range(round((dist.high - dist.low) / dist.step) + 1)]
    raise ValueError(f"GridSampler needs discrete values: {name} is {dist}; use choice(...) or range(...)")


def override_value(value: Any) -> str:
    """A parameter value as Hydra's override grammar reads it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def trial_overrides(trial: optuna.Trial | FrozenTrial, fixed: Sequence[str]) -> list[str]:
    return [f"{name}={override_value(value)}" for name, value in trial.params.items()] + list(fixed)
