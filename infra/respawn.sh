#!/usr/bin/env bash
# Run a command and start it again whenever it dies, as systemd's Restart=on-failure
# would: under `make run` (honcho) a kill -9 of the relay or of the consumers'
# supervisor would otherwise stop the whole system, since honcho stops every process
# once one exits. A SIGTERM/SIGINT (honcho's stop, Ctrl-C) is passed on and ends it; so
# does a clean exit, and dying 5 times within 30 s (a misconfiguration: its message is
# above, and honcho then stops the rest).
#
# Usage: infra/respawn.sh COMMAND [ARG...]
set -u
stopping=0
child=0
deaths=()
trap 'stopping=1; [ "$child" -ne 0 ] && kill -TERM "$child" 2>/dev/null' TERM INT
while :; do
  "$@" &
  child=$!
  status=0
  wait "$child" || status=$?
  # A trapped signal ends `wait` early: wait for the child itself to finish.
  while kill -0 "$child" 2>/dev/null; do
    status=0
    wait "$child" || status=$?
  done
  if [ "$stopping" -eq 1 ] || [ "$status" -eq 0 ]; then
    exit "$status"
  fi
  now=$SECONDS
  deaths+=("$now")
  recent=0
  for t in "${deaths[@]}"; do
    if [ $((now - t)) -lt 30 ]; then recent=$((recent + 1)); fi
  done
  if [ "$recent" -ge 5 ]; then
    echo "respawn: $1 died $recent times within 30 s (last status $status); giving up" >&2
    exit "$status"
  fi
  echo "respawn: $* exited with status $status; starting it again in 1 s" >&2
  sleep 1
  # A stop that came during the pause (its trap ran once `sleep` ended).
  if [ "$stopping" -eq 1 ]; then
    exit 143
  fi
done
