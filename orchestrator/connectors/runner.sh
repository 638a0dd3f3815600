#!/bin/sh
# Run one task at most once: runner.sh TASK_DIR (the shell twin of runner.py).
#
# 1. claim the task: create TASK_DIR/claim exclusively (noclobber: O_CREAT|O_EXCL); if it
#    exists, another runner has (or had) the task and this one exits at once;
# 2. run TASK_DIR/task.sh, sourced in a subshell (a fork, no new program), with stdout and
#    stderr in TASK_DIR/stdout and stderr;
# 3. write TASK_DIR/result.json, one short write: a reader that finds it incomplete treats
#    it as absent (the runner is then alive, or died without a result: a lost attempt).
#
# One process per task besides the task's own programs: no clock is read (the claim's and the
# result's modification times are the start and end), nothing is renamed or synced. A write
# that returned is seen by every process after this one dies, which is all that exactly-once
# across a crash of the orchestrator needs (docs/execution.md, "Where durability comes from").
# Any POSIX sh runs it (dash, bash).
[ -d "$1" ] || { echo "usage: runner.sh TASK_DIR" >&2; exit 2; }
cd "$1" || exit 2
set -C
if ! { printf '{"pid": %s}\n' "$$" > claim; } 2>/dev/null; then
    exit 0
fi
set +C
(set --; . ./task.sh) > stdout 2> stderr < /dev/null
printf '{"exit_code": %s}\n' "$?" > result.json
exit 0
