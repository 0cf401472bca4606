#!/usr/bin/env bash
# tpu/launch.sh: start `python -m medr3_jax.train` on every worker at once (JAX multi-controller:
# each host runs the same program; jax.distributed finds its peers on TPU by itself).
#   tpu/launch.sh --name medr3 --zone us-central2-b --workdir gs://my-bucket/runs/llama-s3 \
#       --gin_file=gin/stage3.gin --gin_file=gin/models/llama3_1_8b_instruct.gin \
#       --gin_file=gin/mesh/v4_32.gin --gin_param="MODEL_DIR='/data/Llama-3.1-8B-Instruct'"
# Each worker runs it under nohup, appending to ~/medr3_jax_logs/train.log on its own disk.
set -euo pipefail
PROG=launch.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

LOG=$REMOTE_LOGS/train.log
PIDFILE=$REMOTE_LOGS/train.pid

usage() {
  cat <<USAGE
usage: tpu/launch.sh --name NAME --zone ZONE --workdir DIR [--gin_file FILE]... [--gin_param P]...
                     [--env KEY=VALUE]... [--project PROJECT] [--dry-run]
       tpu/launch.sh --name NAME --zone ZONE --stop [--project PROJECT] [--dry-run]

Runs, on every worker at once, in $REMOTE_REPO:
  nohup .venv/bin/python -m medr3_jax.train --gin_file=... --gin_param=... --workdir=DIR >> $LOG 2>&1 &
after checking that no run is going on any worker. Follow it with tpu/logs.sh.

  --workdir DIR     checkpoints, TensorBoard, rollouts (required). One host: a path on the worker.
                    A pod: gs://BUCKET/PATH, mounted with gcsfuse at $GCS_MOUNT_ROOT/BUCKET on every
                    worker (installed if missing), so that each host's checkpoint shards land in
                    one checkpoint; the run gets $GCS_MOUNT_ROOT/BUCKET/PATH. A shared mount of
                    your own (NFS, Filestore) works as a plain path.
                    A relative path is relative to $REMOTE_REPO.
  --gin_file FILE   repeatable, relative to $REMOTE_REPO (gin/stage3.gin, gin/mesh/v4_32.gin, ...)
  --gin_param P     repeatable, passed through intact, e.g. --gin_param="MODEL_DIR='/data/llama'"
  --env KEY=VALUE   repeatable: environment of the training process (e.g. LIBTPU_INIT_ARGS=...)
  --stop            stop the run on every worker (SIGTERM) instead
  --name, --zone, --project, --dry-run, -h/--help: as in every tpu/ script
USAGE
}

WORKDIR=''
STOP=0
train_args=()
env_args=(PYTHONUNBUFFERED=1)
while (($#)); do
  case $1 in
    --gin_file | --gin_file=*)
      flag_value "$@"
      train_args+=("--gin_file=$VALUE")
      ;;
    --gin_param | --gin_param=*)
      flag_value "$@"
      train_args+=("--gin_param=$VALUE")
      ;;
    --workdir | --workdir=*)
      flag_value "$@"
      WORKDIR=$VALUE
      ;;
    --env | --env=*)
      flag_value "$@"
      [[ $VALUE =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die_usage "--env $VALUE: expected KEY=VALUE"
      env_args+=("$VALUE")
      ;;
    --stop)
      STOP=1
      NSHIFT=1
      ;;
    *) common_flag "$@" ;;
  esac
  shift "$NSHIFT"
done
require_common

running="[ -f $PIDFILE ] && kill -0 \"\$(cat $PIDFILE)\" 2>/dev/null"
if ((STOP)); then
  on_workers all "if $running; then kill \"\$(cat $PIDFILE)\" && echo \"\$(hostname): stopped\"; \
else echo \"\$(hostname): not running\"; fi"
  exit 0
fi
[[ -n $WORKDIR ]] || die_usage "missing required flag --workdir"
if [[ $WORKDIR == gs://* ]]; then
  gcs_workdir "$WORKDIR" # sets BUCKET, MOUNTED
  train_args+=("--workdir=$MOUNTED")
else
  train_args+=("--workdir=$WORKDIR")
fi

# 1. Refuse to start a second run on a worker (the TPU is taken) or to start without setup.sh.
on_workers all "if $running; then echo \"\$(hostname): a run is going (pid \$(cat $PIDFILE)); \
tpu/launch.sh --stop first\" >&2; exit 1; fi; [ -x $REMOTE_REPO/.venv/bin/python ] || \
{ echo \"\$(hostname): no $REMOTE_REPO/.venv; run tpu/setup.sh first\" >&2; exit 1; }"

# 1b. A gs:// workdir: mount the bucket on every worker (the same path everywhere).
if [[ $WORKDIR == gs://* ]]; then
  on_workers all "$(gcs_mount_command "$BUCKET")"
fi

# 2. Start it on all workers. `cmd &` alone (not `a && cmd &`) so that $! is the trainer's pid.
train=$(quote_cmd nohup env "${env_args[@]}" .venv/bin/python -m medr3_jax.train "${train_args[@]}")
on_workers all "cd $REMOTE_REPO || exit 1; mkdir -p $REMOTE_LOGS; \
echo \"=== \$(date -u +%Y-%m-%dT%H:%M:%SZ) \$(hostname)\" >> $LOG; \
$train >> $LOG 2>&1 < /dev/null & echo \$! > $PIDFILE; echo \"\$(hostname): started pid \$!, log $LOG\""

scope="--name $NAME --zone $ZONE${PROJECT:+ --project $PROJECT}"
info "each worker logs to $LOG on its own disk:"
info "  follow worker 0:      tpu/logs.sh $scope"
info "  follow worker N:      tpu/logs.sh $scope --worker N"
info "  TensorBoard:          tpu/tensorboard.sh $scope --workdir $(shquote "$WORKDIR")"
info "  stop on all workers:  tpu/launch.sh $scope --stop"
