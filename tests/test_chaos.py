"""Issue 24's chaos test, small enough for every CI run: built-in XGBoost jobs while the server is
SIGKILLed and restarted, agents are SIGKILLed at random, and idle, slow-header and slow-body
connections are held open (bench/chaos.py; `scripts/chaos.sh` runs it with 200 jobs and reports the
latency and memory figures, which this test prints but does not judge). Nothing may be lost: every
job created once, ended Completed (agents killed under them are platform failures, retried), its
model in S3 and its validation:auc reported."""
import pathlib
import shutil
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "bench"))
import chaos  # noqa: E402


def test_nothing_is_lost_under_server_and_agent_kills_and_a_connection_soak():
    c = chaos.Chaos(jobs=40, server_kill_every=2.5, agent_kill_every=0.4, idle=200, slow=10, seed=11)
    try:
        report = c.run(timeout=600)
    finally:
        if c.kiln is not None:
            shutil.rmtree(c.kiln.data_dir, ignore_errors=True)
    print(report.summary())
    assert report.lost == []
    assert report.statuses == {"Completed": 40}
    assert report.server_kills >= 1 and report.agent_kills >= 1, report.summary()
    assert report.retried_jobs >= 1, report.summary()
    assert report.soak_open == 220
