#!/usr/bin/env bash
# tpu/logs.sh: stream the training log of one worker (worker 0 unless --worker N). Ctrl-C stops
# the streaming, not the training.
#   tpu/logs.sh --name medr3 --zone us-central2-b --worker 3
set -euo pipefail
PROG=logs.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<USAGE
usage: tpu/logs.sh --name NAME --zone ZONE [--worker N] [--lines N] [--project PROJECT] [--dry-run]

Follows $REMOTE_LOGS/train.log (written by tpu/launch.sh) on one worker: tail -n LINES -F.

  --worker N   worker index, 0 .. hosts-1 (default 0: JAX process 0, which writes the metrics)
  --lines N    lines of history to show first (default 100)
  --name, --zone, --project, --dry-run, -h/--help: as in every tpu/ script
USAGE
}

WORKER=0
LINES=100
while (($#)); do
  case $1 in
    --worker | --worker=*)
      flag_value "$@"
      WORKER=$VALUE
      ;;
    --lines | --lines=*)
      flag_value "$@"
      LINES=$VALUE
      ;;
    *) common_flag "$@" ;;
  esac
  shift "$NSHIFT"
done
require_common
[[ $WORKER =~ ^[0-9]+$ ]] || die_usage "--worker $WORKER: expected a worker index (0, 1, ...)"
[[ $LINES =~ ^[0-9]+$ ]] || die_usage "--lines $LINES: expected a number"

on_workers "$WORKER" "tail -n $LINES -F $REMOTE_LOGS/train.log"
