#!/bin/sh
# Run one task at most once: runner.sh TASK_DIR (the shell twin of runner.py).
#
# 1. claim the task: create TASK_DIR/claim exclusively (noclobber); if it exists,
#    another runner has (or had) the task and this one exits at once;
# 2. run TASK_DIR/task.sh with stdout and stderr in TASK_DIR/stdout and stderr;
# 3. write TASK_DIR/result.json atomically (temporary file, sync, rename).
[ -d "$1" ] || { echo "usage: runner.sh TASK_DIR" >&2; exit 2; }
d=$(cd "$1" && pwd)
now() { date +%s.%N; }
set -C
if ! { printf '{"pid": %s, "at": %s}\n' "$$" "$(now)" > "$d/claim"; } 2>/dev/null; then
    exit 0
fi
set +C
started=$(now)
cd "$d" || exit 2
sh "$d/task.sh" > "$d/stdout" 2> "$d/stderr" < /dev/null
code=$?
printf '{"exit_code": %s, "started_at": %s, "ended_at": %s}\n' "$code" "$started" "$(now)" \
    > "$d/result.json.tmp"
sync "$d/result.json.tmp" 2>/dev/null
mv -f "$d/result.json.tmp" "$d/result.json"
exit 0
