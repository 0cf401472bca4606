#!/usr/bin/env bash
# tpu/stage_data.sh: copy the model, the prepared TFDS data and the retrieval index onto the
# local disk of every worker (each host of a pod reads its own copy).
#   tpu/stage_data.sh --name medr3 --zone us-central2-b \
#       --model gs://my-bucket/Llama-3.1-8B-Instruct --data ~/tensorflow_datasets --index gs://my-bucket/medcorp
# Each source lands in DEST/<its basename>; the gin params that point training at the copies are
# printed at the end.
set -euo pipefail
PROG=stage_data.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<USAGE
usage: tpu/stage_data.sh --name NAME --zone ZONE [--model SRC] [--data SRC] [--index SRC]
                         [--dest DIR] [--project PROJECT] [--dry-run]

Copies each SRC to DEST/<basename of SRC> on every worker. A gs:// SRC is fetched by every
worker itself (gcloud storage cp -r, fast, inside Google's network); a local SRC is sent from
here (gcloud compute tpus tpu-vm scp --worker=all: slow for a large model, prefer a bucket).

  --model SRC   HF model directory (config.json, tokenizer, *.safetensors)  -> MODEL_DIR
  --data SRC    TFDS data directory made by python -m medr3_jax.data.prepare -> Experiment.data_dir
  --index SRC   retrieval index directory (manifest.json, ...)             -> Experiment.index_dir
  --dest DIR    absolute directory on every worker (default /data; created, owned by you)
  --name, --zone, --project, --dry-run, -h/--help: as in every tpu/ script
At least one of --model, --data, --index.
USAGE
}

MODEL=''
DATA=''
INDEX=''
DEST=/data
while (($#)); do
  case $1 in
    --model | --model=*)
      flag_value "$@"
      MODEL=$VALUE
      ;;
    --data | --data=*)
      flag_value "$@"
      DATA=$VALUE
      ;;
    --index | --index=*)
      flag_value "$@"
      INDEX=$VALUE
      ;;
    --dest | --dest=*)
      flag_value "$@"
      DEST=$VALUE
      ;;
    *) common_flag "$@" ;;
  esac
  shift "$NSHIFT"
done
require_common
[[ -n $MODEL$DATA$INDEX ]] || die_usage "nothing to copy: give --model, --data and/or --index"
[[ $DEST == /* ]] || die_usage "--dest $DEST: must be an absolute path (training reads it from any directory)"
DEST=${DEST%/}
DEST=${DEST:-/}

# staged_path FLAG SRC: where SRC lands on the workers (checks a local SRC exists).
staged_path() {
  local src=${2%/}
  if [[ $src != gs://* && ! -e $src ]]; then
    die_usage "$1 $2: no such file or directory"
  fi
  [[ -n ${src##*/} && $src != gs:/ ]] || die_usage "$1 $2: names no directory"
  printf '%s/%s' "${DEST%/}" "${src##*/}"
}

# stage FLAG SRC: copy SRC into DEST on every worker.
stage() {
  local src=${2%/}
  if [[ $src == gs://* ]]; then
    on_workers all "gcloud storage cp -r $(shquote "$src") $(shquote "${DEST%/}/")"
  else
    scp_to_workers "$src" "${DEST%/}/"
  fi
}

# Check every source before copying anything.
params=()
if [[ -n $MODEL ]]; then
  params+=("--gin_param=MODEL_DIR = '$(staged_path --model "$MODEL")'")
fi
if [[ -n $DATA ]]; then
  params+=("--gin_param=Experiment.data_dir = '$(staged_path --data "$DATA")'")
fi
if [[ -n $INDEX ]]; then
  params+=("--gin_param=Experiment.index_dir = '$(staged_path --index "$INDEX")'")
fi

d=$(shquote "$DEST")
on_workers all "sudo mkdir -p $d && sudo chown \"\$(id -u):\$(id -g)\" $d"
if [[ -n $MODEL ]]; then stage --model "$MODEL"; fi
if [[ -n $DATA ]]; then stage --data "$DATA"; fi
if [[ -n $INDEX ]]; then stage --index "$INDEX"; fi

info "staged on every worker; pass to tpu/launch.sh: $(quote_cmd "${params[@]}")"
