#!/bin/sh
# Run one task at most once: runner.sh TASK_DIR (the shell twin of runner.py).
#
# 1. claim the task: create TASK_DIR/claim exclusively (noclobber); if it exists,
#    another runner has (or had) the task and this one exits at once;
# 2. run TASK_DIR/task.sh with stdout and stderr in TASK_DIR/stdout and stderr;
# 3. write TASK_DIR/result.json atomically (temporary file, sync, rename);
# 4. exit with the task's status (0 when another runner had the claim), so that a batch
#    scheduler running it records the task's outcome; under Slurm the claim names the
#    job (SLURM_JOB_ID) that holds it.
#
# Under bash (what the connectors start when the machine has it) the clock is the
# EPOCHREALTIME built-in: a task then costs four processes (this shell, the task's,
# sync, mv) instead of eleven with date(1) in subshells; any POSIX sh still works.
[ -d "$1" ] || { echo "usage: runner.sh TASK_DIR" >&2; exit 2; }
cd "$1" || exit 2
d=$PWD
now() {
    if [ -n "${EPOCHREALTIME:-}" ]; then
        t=$EPOCHREALTIME
        t=${t%[,.]*}.${t##*[,.]}  # the decimal separator of any locale -> "."
    else
        t=$(date +%s.%N)
    fi
}
now
set -C
if ! { printf '{"pid": %s, "at": %s, "job": "%s"}\n' "$$" "$t" "${SLURM_JOB_ID:-}" \
        > "$d/claim"; } 2>/dev/null; then
    exit 0
fi
set +C
now
started=$t
sh "$d/task.sh" > "$d/stdout" 2> "$d/stderr" < /dev/null
code=$?
now
printf '{"exit_code": %s, "started_at": %s, "ended_at": %s}\n' "$code" "$started" "$t" \
    > "$d/result.json.tmp"
sync "$d/result.json.tmp" 2>/dev/null
mv -f "$d/result.json.tmp" "$d/result.json"
exit "$code"
