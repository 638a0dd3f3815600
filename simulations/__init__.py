"""Mesa agent-based what-if experiments on the federation, driven by real traces.

A scenario (YAML) names a federation, a workload (a Parallel Workloads Archive
SWF trace, a synthetic job stream, WfCommons workflows), hourly price and
carbon series, failures and timed events (price spike, outage, added site,
carbon cap, load multiplier), the planners to compare and the seeds. The
model runs it on mesa's discrete-event simulator: site agents with EASY or
FCFS batch queues and a power model, a broker routing jobs on the real twin's
view, workflow runs placed by the real planners.

Public API::

    from simulations import load_scenario, run_scenario, compare, save_results
    sc = load_scenario("examples/scenarios/price-spike.yaml")
    results = run_scenario(sc)              # one run per planner x seed
    compare(results)                         # tidy table: waits, energy, cost, carbon...
    save_results(results, "sim-output")     # CSV tables and PNG plots

    from simulations import FederationModel
    model = FederationModel(sc, seed=1)
    model.step()                             # one reporting interval (1 h by default)
    model.datacollector.get_model_vars_dataframe()

    from simulations import sweep, parse_sweep
    sweep(sc, parse_sweep(["workload.load=1,2"]), backend="dask", workers=2)
"""

from typing import TYPE_CHECKING

from federation.lazy import lazy_exports

if TYPE_CHECKING:
    from simulations.batch import BatchQueue, Job, QueuePolicy
    from simulations.errors import InvalidScenario, InvalidTrace, SimulationError
    from simulations.experiment import RunResult, compare, result_of, run_scenario, save_results
    from simulations.model import FederationModel
    from simulations.scenario import Scenario, load_scenario, scenario_from_dict
    from simulations.series import HourlySeries, read_hourly_csv
    from simulations.sweep import parse_sweep, plot_sweep, sweep, sweep_dask, sweep_local
    from simulations.swf import SwfTrace, read_swf
    from simulations.validation import ValidationReport, validate_trace
    from simulations.workload import JobTable, jobs_from_trace

if not TYPE_CHECKING:  # mypy reads the imports above; at run time they load on first use
    __getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "BatchQueue",
    "FederationModel",
    "HourlySeries",
    "InvalidScenario",
    "InvalidTrace",
    "Job",
    "JobTable",
    "QueuePolicy",
    "RunResult",
    "Scenario",
    "SimulationError",
    "SwfTrace",
    "ValidationReport",
    "compare",
    "jobs_from_trace",
    "load_scenario",
    "parse_sweep",
    "plot_sweep",
    "read_hourly_csv",
    "read_swf",
    "result_of",
    "run_scenario",
    "save_results",
    "scenario_from_dict",
    "sweep",
    "sweep_dask",
    "sweep_local",
    "validate_trace",
]
