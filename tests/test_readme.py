"""README.md, .ci/run and setup.cfg agree with each other and with the code they describe."""
from __future__ import annotations

import configparser
import importlib.util
import re

from conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command():
    commands = [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "python -m pytest -q"
    assert "source .venv/bin/activate\npython -m pytest -q\n" in README


def test_the_fresh_machine_command_installs_what_ci_installs():
    assert ('python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e ".[dev]" '
            "&& .venv/bin/python -m distill run recipes/tiny.yaml") in README
    assert "torch==2.13.0" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_every_command_module_and_recipe_named_exists():
    modules = set(re.findall(r"-m (distill(?:\.\w+)*)", README))
    assert {"distill", "distill.corpus", "distill.teacher", "distill.student", "distill.serve"} <= modules
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module
    for recipe in set(re.findall(r"recipes/[\w.-]+\.yaml", README)):
        assert (REPO / recipe).is_file(), recipe
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (REPO / image).is_file(), image


def test_the_serve_page_is_package_data():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg", encoding="utf-8")
    patterns = {p.strip() for p in config["options.package_data"]["distill"].split(",")}
    assert {"static/*", "corpus/*.tsv"} <= patterns
    assert (REPO / "distill" / "static" / "index.html").is_file()
    assert "playwright" in config["options.extras_require"]["dev"]
