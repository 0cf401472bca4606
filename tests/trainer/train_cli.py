"""`python -m medr3_jax.train` as subprocesses for the CLI-level tests: one process with two
CPU devices, or two processes with one device each joined by jax.distributed on 127.0.0.1
(gloo), both on the same ('data'=2) mesh, so their runs must agree."""

import os
import signal
import subprocess
import sys
import time

GIN_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "gin")


def train_command(workdir, sample_data_dir, index_dir, steps):
    """The tiny stage-3 run (retrieval on) with a non-zero gradient every step (the entropy
    bonus moves the weights even when a group's rewards tie: zero advantages), evaluated on 3
    held-out questions at step 2 and after the last."""
    params = [f"Experiment.num_steps = {steps}", f"Experiment.data_dir = '{sample_data_dir}'",
              f"Experiment.index_dir = '{index_dir}'", "Experiment.train_data = ('medqa:train', 'pubmedqa:train')",
              "Experiment.mesh = 'data=-1'", "CheckpointConfig.every_steps = 1", "CheckpointConfig.keep = 10",
              "CheckpointConfig.async_save = False", "OptimizerConfig.learning_rate = 1e-2",
              "PolicyLossConfig.entropy_coef = 0.01", "RolloutConfig.max_response_tokens = 32",
              "Experiment.eval_data = ('mirage:pubmedqa',)", "Experiment.eval_every = 2",
              "Experiment.eval_questions = 3", "Experiment.eval_before_train = False",
              "EvalSettings.batch_size = 4"]  # fmt: skip
    cmd = [sys.executable, "-m", "medr3_jax.train", "--gin_file", os.path.join(GIN_DIR, "stage3.gin"),
           "--gin_file", os.path.join(GIN_DIR, "tiny.gin"), "--workdir", str(workdir)]  # fmt: skip
    for p in params:
        cmd += ["--gin_param", p]
    return cmd


def one_process_env():
    """The environment of the one-process runs: two CPU devices."""
    return _env(2)


def _env(devices):
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def start_one_process(workdir, sample_data_dir, index_dir, steps):
    """One process, two CPU devices."""
    cmd = train_command(workdir, sample_data_dir, index_dir, steps)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(2))


def evaluate_command(checkpoint, sample_data_dir, index_dir, out_dir):
    """`python -m medr3_jax.evaluate` on a training workdir: 3 PubMedQA questions, 2 samples each
    at T 0.6, searching the index, rows split over the 'data' axis."""
    return [sys.executable, "-m", "medr3_jax.evaluate", "--checkpoint", str(checkpoint), "--dataset", "mirage",
            "--split", "pubmedqa", "--data_dir", str(sample_data_dir), "--index_dir", str(index_dir), "--limit", "3",
            "--samples", "2", "--temperature", "0.6", "--batch_size", "2", "--max_new_tokens", "32",
            "--mesh", "data=-1", "--out_dir", str(out_dir)]  # fmt: skip


def run_one_process(cmd, timeout=600):
    """`cmd` as one process with two CPU devices; returns (returncode, stdout, stderr)."""
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(2), timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def run_two_processes(workdir, sample_data_dir, index_dir, steps, port, timeout=600, sigterm_when=None):
    """The training command on two processes with one CPU device each; returns (returncode,
    stderr) per process."""
    cmd = train_command(workdir, sample_data_dir, index_dir, steps)
    return run_command_on_two_processes(cmd, port, timeout, sigterm_when=sigterm_when)


def run_command_on_two_processes(cmd, port, timeout=600, sigterm_when=None):
    """`cmd` on two processes with one CPU device each, joined on 127.0.0.1:`port`; returns
    (returncode, stderr) per process. `sigterm_when`: a condition polled while they run; once
    it holds, process 1 (not the primary) gets SIGTERM, as one host of a slice would."""
    procs = [
        subprocess.Popen(
            cmd + ["--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(i)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(1),
        )  # fmt: skip
        for i in range(2)
    ]
    try:
        if sigterm_when is not None:
            deadline = time.monotonic() + timeout
            while not sigterm_when() and procs[1].poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            procs[1].send_signal(signal.SIGTERM)
        logs = [p.communicate(timeout=timeout)[1] for p in procs]
        return [(p.returncode, log) for p, log in zip(procs, logs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
