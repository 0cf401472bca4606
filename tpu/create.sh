#!/usr/bin/env bash
# tpu/create.sh: create a Cloud TPU VM (one host) or pod slice (several hosts, "workers").
#   tpu/create.sh --name medr3 --zone us-central2-b --accelerator-type v4-32
set -euo pipefail
PROG=create.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<USAGE
usage: tpu/create.sh --name NAME --zone ZONE --accelerator-type TYPE
                     [--runtime-version VERSION] [--spot] [--project PROJECT] [--dry-run]

Creates the TPU VM / pod slice NAME with gcloud compute tpus tpu-vm create.

  --name NAME               TPU name (required)
  --zone ZONE               zone that offers TYPE, e.g. us-central2-b (v4), us-west4-a (v5e) (required)
  --accelerator-type TYPE   one of: $ACCELERATOR_TYPES (required)
  --runtime-version V       default: tpu-ubuntu2204-base for v4, v2-alpha-tpuv5-lite for v5e
  --spot                    a Spot slice (cheaper; can be preempted at any time)
  --project PROJECT         default: gcloud's configured project
  --dry-run                 print the gcloud command, run nothing
  -h, --help                this help
USAGE
}

ACCEL=''
RUNTIME=''
SPOT=0
while (($#)); do
  case $1 in
    --accelerator-type | --accelerator-type=*)
      flag_value "$@"
      ACCEL=$VALUE
      ;;
    --runtime-version | --runtime-version=*)
      flag_value "$@"
      RUNTIME=$VALUE
      ;;
    --spot)
      SPOT=1
      NSHIFT=1
      ;;
    *) common_flag "$@" ;;
  esac
  shift "$NSHIFT"
done
require_common
[[ -n $ACCEL ]] || die_usage "missing required flag --accelerator-type (one of: $ACCELERATOR_TYPES)"
case " $ACCELERATOR_TYPES " in
  *" $ACCEL "*) ;;
  *) die_usage "--accelerator-type $ACCEL: not one of $ACCELERATOR_TYPES" ;;
esac
RUNTIME=${RUNTIME:-$(default_runtime_version "$ACCEL")}

args=("--accelerator-type=$ACCEL" "--version=$RUNTIME")
if ((SPOT)); then
  args+=(--spot)
fi
tpu_vm create "${args[@]}"

((DRY_RUN)) && exit 0
mesh=$(mesh_preset "$ACCEL")
info "next: tpu/setup.sh --name $NAME --zone $ZONE"
if [[ -n $mesh ]]; then
  info "mesh preset for $ACCEL: --gin_file=$mesh"
else
  info "no mesh preset for $ACCEL: base.gin's mesh (every device on fsdp) applies"
fi
