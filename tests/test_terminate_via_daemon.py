"""Run termination through the daemon's launcher: a process that may not reach the runs (the compose webserver,
which holds no Docker socket: TP_TERMINATE_VIA_DAEMON=1) only asks; the daemon's run monitoring finds the request
and its launcher stops the run. Real Dagster: a code server, a run worker, run monitoring."""

from __future__ import annotations

import logging
import time

SLOW_LOCATION = r'''
import time
from dagster import Definitions, job, op


@op
def wait_a_long_time():
    for _ in range(600):
        time.sleep(0.2)


@job
def slow_job():
    wait_a_long_time()


defs = Definitions(jobs=[slow_job])
'''


def test_the_webserver_asks_and_the_daemons_launcher_terminates(tmp_path, monkeypatch):
    from dagster import instance_for_test
    from dagster._core.storage.dagster_run import DagsterRunStatus
    from dagster._core.test_utils import create_run_for_test, create_test_daemon_workspace_context, \
        poll_for_finished_run
    from dagster._core.workspace.load_target import PythonFileTarget
    from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

    from trading_platform.live.prefork import TERMINATE_TAG, VIA_DAEMON_ENV

    monkeypatch.delenv(VIA_DAEMON_ENV, raising=False)
    loc = tmp_path / "slow_location.py"
    loc.write_text(SLOW_LOCATION)
    overrides = {"run_launcher": {"module": "trading_platform.live.prefork", "class": "PreforkRunLauncher",
                                  "config": {}},
                 "run_monitoring": {"enabled": True, "poll_interval_seconds": 1}}
    with instance_for_test(overrides=overrides) as instance, \
            create_test_daemon_workspace_context(PythonFileTarget(str(loc), None, str(tmp_path), "slow"),
                                                 instance) as wpc:
        ws = wpc.create_request_context()
        location = ws.get_code_location("slow")
        rjob = next(iter(location.get_repositories().values())).get_full_job("slow_job")
        plan = location.get_execution_plan(rjob, {}, None, None, instance=instance)
        run = create_run_for_test(instance, job_name=rjob.name, job_snapshot=rjob.job_snapshot,
                                  execution_plan_snapshot=plan.execution_plan_snapshot,
                                  remote_job_origin=rjob.get_remote_origin(), job_code_origin=rjob.get_python_origin())
        instance.launch_run(run.run_id, ws)
        deadline = time.monotonic() + 120
        while instance.get_run_by_id(run.run_id).status != DagsterRunStatus.STARTED and time.monotonic() < deadline:
            time.sleep(0.2)
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED

        def monitor():
            list(execute_run_monitoring_iteration(wpc, logging.getLogger("run_monitoring")))

        # the webserver's side: it asks, and the run goes on
        monkeypatch.setenv(VIA_DAEMON_ENV, "1")
        assert instance.run_launcher.terminate(run.run_id) is True
        asked = instance.get_run_by_id(run.run_id)
        assert TERMINATE_TAG in asked.tags and asked.status == DagsterRunStatus.STARTED
        monitor()  # a process set the same way never acts on the request itself
        time.sleep(1)
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
        # the daemon's side: its run monitoring passes the request to its launcher, which terminates the run
        monkeypatch.delenv(VIA_DAEMON_ENV)
        monitor()
        done = poll_for_finished_run(instance, run.run_id, timeout=60)
        assert done.status == DagsterRunStatus.CANCELED, done.status
        messages = [e.message for e in instance.all_logs(run.run_id)]
        assert any("termination requested" in (m or "") for m in messages)
