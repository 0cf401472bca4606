# tpu/common.sh: sourced by the tpu/*.sh scripts. Flag parsing shared by all of them, shell
# quoting, and `run`, which prints a command (--dry-run) or runs it. Works with bash >= 3.2
# (macOS): no associative arrays, no empty "${array[@]}" under `set -u`.
#
# A script sets PROG and defines usage(), sources this file, then parses its flags:
#   while (($#)); do
#     case $1 in
#       --spot) SPOT=1; NSHIFT=1 ;;
#       --accelerator-type | --accelerator-type=*) flag_value "$@"; ACCEL=$VALUE ;;
#       *) common_flag "$@" ;;
#     esac
#     shift "$NSHIFT"
#   done
#   require_common

# A library: the variables it sets are read by the scripts that source it (SC2034).
# shellcheck shell=bash disable=SC2034

# Where things live on every worker. Home-relative, and pasted unquoted into remote commands so
# that `~` expands there.
# shellcheck disable=SC2088
REMOTE_REPO='~/medr3_jax'
# shellcheck disable=SC2088
REMOTE_LOGS='~/medr3_jax_logs'
DEFAULT_PYTHON=python3.11 # requires-python >= 3.11; the TPU images' Ubuntu 22.04 has 3.10

NAME=''
ZONE=''
PROJECT=''
DRY_RUN=0
VALUE=''
NSHIFT=1
GCLOUD_SCOPE=()

# A usage error (bad or missing flag): one line on stderr, exit 2.
die_usage() {
  printf '%s: error: %s (see --help)\n' "$PROG" "$*" >&2
  exit 2
}

# Any other failure found before running anything: one line on stderr, exit 1.
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

# Progress and hints go to stderr, so that --dry-run's stdout holds only the commands.
info() {
  printf '%s\n' "$*" >&2
}

# flag_value "$@": the value of the flag in $1, given as --flag=VALUE or --flag VALUE.
# Sets VALUE and NSHIFT (how many arguments the flag took).
flag_value() {
  case $1 in
    --*=*)
      VALUE=${1#*=}
      NSHIFT=1
      ;;
    *)
      if (($# < 2)) || [[ $2 == --* ]]; then
        die_usage "$1 needs a value"
      fi
      VALUE=$2
      NSHIFT=2
      ;;
  esac
}

# common_flag "$@": --name, --zone, --project, --dry-run, --help; anything else is an error.
common_flag() {
  case $1 in
    --name | --name=*)
      flag_value "$@"
      NAME=$VALUE
      ;;
    --zone | --zone=*)
      flag_value "$@"
      ZONE=$VALUE
      ;;
    --project | --project=*)
      flag_value "$@"
      PROJECT=$VALUE
      ;;
    --dry-run)
      DRY_RUN=1
      NSHIFT=1
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    -*) die_usage "unknown flag: ${1%%=*}" ;;
    *) die_usage "unexpected argument: $1" ;;
  esac
}

# After parsing: --name and --zone are required; sets GCLOUD_SCOPE (zone and project flags).
require_common() {
  [[ -n $NAME ]] || die_usage "missing required flag --name"
  [[ -n $ZONE ]] || die_usage "missing required flag --zone"
  GCLOUD_SCOPE=("--zone=$ZONE")
  if [[ -n $PROJECT ]]; then
    GCLOUD_SCOPE+=("--project=$PROJECT")
  fi
}

# Characters that need no quoting (those of Python's shlex.quote).
_SAFE_CHARS='ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789@%+=:,./_-'

# shquote WORD: WORD as one shell word that bash and Python's shlex.split read back exactly.
# Bare when safe; 'single quotes' when it has no '; "double quotes" when it has ' but nothing
# special inside double quotes; else single quotes with each ' written '"'"'.
shquote() {
  local s=$1 sq="'" esc="'\"'\"'"
  if [[ -n $s && $s != *[!$_SAFE_CHARS]* ]]; then
    printf '%s' "$s"
  elif [[ $s != *"$sq"* ]]; then
    printf "'%s'" "$s"
  elif [[ $s != *[\"\\\$\`!]* ]]; then
    printf '"%s"' "$s"
  else
    printf "'%s'" "${s//$sq/$esc}"
  fi
}

# shquote_arg ARG: like shquote, but --flag=VALUE keeps --flag= bare (--command='...').
shquote_arg() {
  local flag
  if [[ $1 == --*=* ]]; then
    flag=${1%%=*}
    if [[ $flag != *[!$_SAFE_CHARS]* ]]; then
      printf '%s=' "$flag"
      shquote "${1#*=}"
      return
    fi
  fi
  shquote "$1"
}

# quote_cmd ARG...: the command line that runs exactly ARG... (one line, no newline).
quote_cmd() {
  local sep='' arg
  for arg in "$@"; do
    printf '%s' "$sep"
    shquote_arg "$arg"
    sep=' '
  done
}

# run CMD ARG...: with --dry-run print the command line on stdout and run nothing; otherwise
# echo it to stderr and run it.
run() {
  if ((DRY_RUN)); then
    quote_cmd "$@"
    printf '\n'
  else
    info "+ $(quote_cmd "$@")"
    "$@"
  fi
}

# tpu_vm SUBCOMMAND ARG...: `gcloud compute tpus tpu-vm SUBCOMMAND NAME --zone=.. [--project=..] ARG...`
tpu_vm() {
  local sub=$1
  shift
  run gcloud compute tpus tpu-vm "$sub" "$NAME" "${GCLOUD_SCOPE[@]}" "$@"
}

# scp_to_workers LOCAL_PATH REMOTE_PATH: copy a file or directory to every worker (recursively).
scp_to_workers() {
  run gcloud compute tpus tpu-vm scp "$1" "$NAME:$2" "${GCLOUD_SCOPE[@]}" --worker=all --recurse
}

# on_workers WORKER REMOTE_COMMAND [SSH_ARG...]: run a shell command on worker N or `all` (at once).
on_workers() {
  local worker=$1 command=$2
  shift 2
  tpu_vm ssh "--worker=$worker" "--command=$command" "$@"
}

# A gs:// workdir is used through Cloud Storage FUSE: the trainer writes its workdir as files and
# every host's Orbax shards must land in one checkpoint, so the bucket is mounted at the same path
# on every worker, GCS_MOUNT_ROOT/<bucket>, and the run is given that path. Orbax finalises a
# checkpoint on a local path by renaming its temporary directory, which gcsfuse refuses by default:
# --rename-dir-limit allows it (a copy + delete on GCS, not atomic; a preemption during it can
# leave a step without its items, which restore reports by name: resume from the step before).
GCS_MOUNT_ROOT=/mnt/gcs

# gcs_workdir URL: checks a gs://BUCKET[/PATH] workdir; sets BUCKET and MOUNTED (the path on a worker).
gcs_workdir() {
  local rest=${1#gs://}
  BUCKET=${rest%%/*}
  [[ $BUCKET =~ ^[a-z0-9][a-z0-9._-]*$ ]] || die_usage "--workdir $1: expected gs://BUCKET/PATH"
  MOUNTED=$GCS_MOUNT_ROOT/$rest
  MOUNTED=${MOUNTED%/}
}

# gcs_mount_command BUCKET: a worker command that mounts the bucket at GCS_MOUNT_ROOT/BUCKET
# unless it is mounted, installing gcsfuse first where it is missing (Google's apt repository).
gcs_mount_command() {
  local dir=$GCS_MOUNT_ROOT/$1
  printf '%s' "mountpoint -q $dir || { command -v gcsfuse >/dev/null || { \
echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt \
gcsfuse-\$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && \
curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc \
>/dev/null && sudo apt-get -o DPkg::Lock::Timeout=600 -qq update && \
sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq install -y gcsfuse; } && \
sudo mkdir -p $dir && sudo chown \"\$(id -u):\$(id -g)\" $dir && gcsfuse --implicit-dirs --rename-dir-limit=1000000 $1 $dir; }"
}

# Accelerator types the scripts know, and the runtime (software) version for each generation.
ACCELERATOR_TYPES='v4-8 v4-16 v4-32 v4-64 v4-128 v4-256 v5litepod-8 v5litepod-16 v5litepod-32 v5litepod-64 v5litepod-128 v5litepod-256'

default_runtime_version() {
  case $1 in
    v4-*) printf '%s' tpu-ubuntu2204-base ;;
    v5litepod-*) printf '%s' v2-alpha-tpuv5-lite ;;
  esac
}

# The mesh preset for a topology (empty: none; base.gin's all-FSDP mesh fits any slice).
mesh_preset() {
  case $1 in
    v4-8) printf '%s' gin/mesh/v4_8.gin ;;
    v4-32) printf '%s' gin/mesh/v4_32.gin ;;
    v5litepod-64) printf '%s' gin/mesh/v5e_64.gin ;;
    v5litepod-256) printf '%s' gin/mesh/v5e_256.gin ;;
  esac
}
