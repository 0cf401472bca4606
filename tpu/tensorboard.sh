#!/usr/bin/env bash
# tpu/tensorboard.sh: run TensorBoard on worker 0 over a training workdir and forward its port
# here; open http://localhost:6006. Ctrl-C stops both.
#   tpu/tensorboard.sh --name medr3 --zone us-central2-b --workdir gs://my-bucket/runs/llama-s3
set -euo pipefail
PROG=tensorboard.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<USAGE
usage: tpu/tensorboard.sh --name NAME --zone ZONE --workdir DIR [--port N] [--project PROJECT] [--dry-run]

On worker 0, in $REMOTE_REPO: .venv/bin/tensorboard --logdir=DIR (it finds every stage's
DIR/<stage>/tb), bound to localhost:N there and forwarded to localhost:N here (ssh -L).

  --workdir DIR   the --workdir given to tpu/launch.sh (required; gs://: read at its mount)
  --port N        default 6006
  --name, --zone, --project, --dry-run, -h/--help: as in every tpu/ script
USAGE
}

WORKDIR=''
PORT=6006
while (($#)); do
  case $1 in
    --workdir | --workdir=*)
      flag_value "$@"
      WORKDIR=$VALUE
      ;;
    --port | --port=*)
      flag_value "$@"
      PORT=$VALUE
      ;;
    *) common_flag "$@" ;;
  esac
  shift "$NSHIFT"
done
require_common
[[ -n $WORKDIR ]] || die_usage "missing required flag --workdir"
[[ $PORT =~ ^[0-9]+$ ]] || die_usage "--port $PORT: expected a port number"

mount=''
if [[ $WORKDIR == gs://* ]]; then # read it where tpu/launch.sh mounted it
  gcs_workdir "$WORKDIR"          # sets BUCKET, MOUNTED
  mount="$(gcs_mount_command "$BUCKET") && "
  WORKDIR=$MOUNTED
fi

info "TensorBoard: http://localhost:$PORT (Ctrl-C stops it)"
on_workers 0 "${mount}cd $REMOTE_REPO && exec .venv/bin/tensorboard $(quote_cmd "--logdir=$WORKDIR") \
--host=localhost --port=$PORT" -- -L "$PORT:localhost:$PORT"
