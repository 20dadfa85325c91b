"""The paper's synthetic token-manipulation evaluations: the MAD task suite (in-context recall, fuzzy and
noisy in-context recall, selective copying, compression, memorization) for any block layout.

    from evo2lite.evals import run_synthetic, summary_table
    df = run_synthetic(["SSSS", "AAAA", "SMLA"], ["in-context-recall"], "results.parquet", max_steps=500)
"""

from .runner import RunSpec, best_over_sweep, plan_runs, run_one, run_synthetic, summary_table
from .tasks import IGNORE, TASKS, Task, TaskData, make_data, setting_id

__all__ = ["IGNORE", "TASKS", "Task", "TaskData", "make_data", "setting_id", "RunSpec", "plan_runs", "run_one",
           "run_synthetic", "best_over_sweep", "summary_table"]
