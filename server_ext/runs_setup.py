"""Make the server's runs (and schedules) from its c.Cellhop settings; app.py calls `make_runs`."""

from __future__ import annotations

from pathlib import Path


def state_root(config) -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(config.state_dir) if config.state_dir else Path(jupyter_data_dir()) / "cellhop"


def make_runs(app) -> None:
    from .api.runs import RUNS_SETTING, SCHEDULES_SETTING
    from .runs import Runs
    from .schedules import Schedules

    config = app.cellhop
    app.runs = Runs(app.control_plane, state_root(config) / "runs", result_limit=config.run_result_limit,
                    retention=config.run_retention, concurrency=config.run_concurrency,
                    keep_warm=config.run_keep_warm, callback_timeout=config.run_callback_timeout)
    app.settings[RUNS_SETTING] = app.runs
    app.schedules = Schedules(app.runs, state_root(config) / "schedules")
    app.settings[SCHEDULES_SETTING] = app.schedules
    app.runs.on_close.append(app.schedules.close)
    app.runs.on_start.append(app.schedules.started)
