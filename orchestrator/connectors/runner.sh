#!/bin/sh
# Run one task at most once: runner.sh TASK_DIR (the shell twin of runner.py).
#
# 1. claim the task: create TASK_DIR/claim exclusively (noclobber: O_CREAT|O_EXCL); if it
#    exists, another runner has (or had) the task and this one exits at once; under Slurm
#    the claim names the job (SLURM_JOB_ID) that holds it;
# 2. run TASK_DIR/task.sh in a shell of its own (its own process: $$ is the task's, a
#    task that kills itself is a task killed by a signal), with stdout and stderr in
#    TASK_DIR/stdout and stderr;
# 3. write TASK_DIR/result.json, one short write (also when SIGTERM came after the task had
#    ended or while it finished: see below): a reader that finds it incomplete treats
#    it as absent (the runner is then alive, or died without a result: a lost attempt);
# 4. exit with the task's status (0 when another runner had the claim), so that a batch
#    scheduler running it records the task's outcome.
#
# Two processes per task (this shell and the task's): no clock is read (the claim's and the
# result's modification times are the start and end), nothing is renamed or synced. A write
# that returned is seen by every process after this one dies, which is all that exactly-once
# across a crash of the orchestrator needs (docs/execution.md, "Where durability comes from").
# Any POSIX sh runs it (dash, bash).
[ -d "$1" ] || { echo "usage: runner.sh TASK_DIR" >&2; exit 2; }
cd "$1" || exit 2
set -C
if ! { printf '{"pid": %s, "job": "%s"}\n' "$$" "${SLURM_JOB_ID:-}" > claim; } 2>/dev/null; then
    exit 0
fi
set +C
# SIGTERM is the scheduler ending the job (Slurm at a node failure, the time limit, scancel:
# every process of the job gets it, SIGKILL follows KillWait later). It is noted, not obeyed
# at once: the shell runs the trap only once the task has ended, so a task that had done its
# work, or finished it in that moment, still gets its result (run again, its side effects
# would be repeated), while a task the signal killed leaves no result and the scheduler's
# verdict stands.
term=
trap 'term=1' TERM
sh ./task.sh > stdout 2> stderr < /dev/null
code=$?
# Killed by a signal: a scheduler ending the whole job signals this shell a moment after
# the task; leave it that moment, so that the scheduler's verdict stands rather than a
# result saying "killed by signal". A task that killed itself, or was killed alone, still
# gets its result (only this rare path waits).
[ "$code" -gt 128 ] && [ -z "$term" ] && sleep 0.2
[ "$code" -gt 128 ] && [ -n "$term" ] && exit "$code"
printf '{"exit_code": %s}\n' "$code" > result.json
exit "$code"
