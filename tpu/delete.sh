#!/usr/bin/env bash
# tpu/delete.sh: delete the TPU VM / pod slice (its disks, the staged data and any local
# workdir go with it; a gs:// workdir stays).
#   tpu/delete.sh --name medr3 --zone us-central2-b
set -euo pipefail
PROG=delete.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<USAGE
usage: tpu/delete.sh --name NAME --zone ZONE [--yes] [--project PROJECT] [--dry-run]

Deletes NAME with gcloud compute tpus tpu-vm delete; gcloud asks to confirm unless --yes.

  --yes   do not ask (gcloud --quiet)
  --name, --zone, --project, --dry-run, -h/--help: as in every tpu/ script
USAGE
}

YES=0
while (($#)); do
  case $1 in
    --yes)
      YES=1
      NSHIFT=1
      ;;
    *) common_flag "$@" ;;
  esac
  shift "$NSHIFT"
done
require_common

if ((YES)); then
  tpu_vm delete --quiet
else
  tpu_vm delete
fi
