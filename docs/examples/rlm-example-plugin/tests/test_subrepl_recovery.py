"""What subrepl promises beyond the kit: a dying or stubborn cell costs the process, not the run."""

from rlm_testkit.environments import RecordingHost

from rlm_example.environment import SubprocessREPL


def started(**kwargs):
    env = SubprocessREPL(**kwargs)
    env.start(RecordingHost(), {})
    env.add_context("the task", 0)
    return env


def test_a_cell_that_kills_the_process_is_reported_and_the_repl_restarts():
    env = started()
    try:
        env.execute("x = 1")
        result = env.execute("import os\nos._exit(7)")
        assert "exited (code 7)" in result.error and "restarted" in result.error
        after = env.execute("print(context, 'x' in globals())")
        assert after.stdout == "the task False\n"  # contexts come back, variables do not
    finally:
        env.shutdown()


def test_a_cell_that_swallows_the_interrupt_is_stopped_by_a_restart():
    env = started(interrupt_grace=0.5)
    try:
        result = env.execute("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                             "while True:\n    time.sleep(0.01)", timeout=0.3)
        assert result.timed_out and "restarted" in result.error
        assert env.execute("print(context)").stdout == "the task\n"
    finally:
        env.shutdown()
