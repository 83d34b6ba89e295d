"""An option means the same before or after 'verify', or is refused; none is dropped silently."""

from __future__ import annotations

import json

import pytest

from pmigrate import cli
from tests import blobdeploy as bd
from tests.test_cli_errors import assert_usage_error

BASE = ["--to", "t.cfg"]
COMMON = [
    ["--config", "s.cfg"],
    ["--metadata-only"],
    ["--data-only"],
    ["--workers", "3"],
    ["--batch-size", "7"],
    ["--journal", "j.db"],
    ["--checksum", "md5"],
    ["--ignore-errors"],
    ["--json", "r.json"],
    ["--with-sessions"],
    ["-v"],
    ["-q"],
]


def _parsed(argv: list[str]) -> dict:
    args = cli._parse(cli.build_parser(), argv)
    return {k: v for k, v in vars(args).items() if k != "before_command"}


@pytest.mark.parametrize("option", COMMON, ids=[o[0] for o in COMMON])
def test_a_common_option_means_the_same_before_and_after_verify(option):
    after = _parsed(["verify", *BASE, *option])
    before = _parsed([*option, "verify", *BASE])
    assert before == after
    assert after != _parsed(["verify", *BASE])  # the option took effect
    assert cli.options_from(cli._parse(cli.build_parser(), [*option, "verify", *BASE])) == cli.options_from(
        cli._parse(cli.build_parser(), ["verify", *BASE, *option])
    )


def test_the_target_may_be_named_before_verify():
    assert _parsed(["--to", "t.cfg", "verify"]) == _parsed(["verify", "--to", "t.cfg"])


def test_an_option_written_twice_takes_the_later():
    assert _parsed(["--workers", "3", "verify", *BASE, "--workers", "5"])["workers"] == 5


@pytest.fixture
def copied(tmp_path, run_cli):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(6, seed=5))
    target = bd.file_target(tmp_path / "dst")
    proc = run_cli("--config", str(dep.config), "--to", str(target), "--data-only", "-q")
    assert proc.returncode == 0, proc.stderr
    return dep, target


@pytest.mark.parametrize("where", ["before", "after"])
def test_verify_takes_config_json_and_checksum_on_either_side(copied, run_cli, tmp_path, where):
    dep, target = copied
    report = tmp_path / f"{where}.json"
    options = ["--config", str(dep.config), "--json", str(report), "--checksum", "md5", "--data-only", "-q"]
    args = [*options, "verify", "--to", str(target)] if where == "before" else ["verify", "--to", str(target), *options]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "unverifiable by md5" in proc.stdout  # --checksum md5 took effect
    doc = json.loads(report.read_text())
    assert doc["command"] == "verify" and doc["ok"]
    assert doc["sections"]["verify-blobs"]["ok"] == len(dep.with_blob())
    assert "verify-rows" not in doc["sections"]  # --data-only took effect


@pytest.mark.parametrize(
    "option", [["--dry-run"], ["--verify"], ["--restart"], ["--max-memory", "1G"]], ids=lambda o: o[0]
)
def test_an_option_of_migrating_before_verify_is_refused(run_cli, tmp_path, option):
    proc = run_cli(*option, "verify", "--to", str(tmp_path / "t.cfg"))
    assert_usage_error(proc, option[0], "is an option of migrating, not of verify", "pmigrate verify --help")


def test_options_before_fakedb_are_refused(run_cli, tmp_path):
    for option in (["-q"], ["--batch-size", "9"], ["--workers", "2"]):
        proc = run_cli(*option, "fakedb", str(tmp_path / "fake"))
        assert_usage_error(proc, option[0], "before 'fakedb'")
    assert not (tmp_path / "fake").exists()


def test_exclusive_options_are_refused_across_positions(run_cli, tmp_path):
    t = str(tmp_path / "t.cfg")
    assert_usage_error(run_cli("--data-only", "verify", "--metadata-only", "--to", t), "not allowed with")
    assert_usage_error(run_cli("-v", "verify", "-q", "--to", t), "not allowed with")
    assert_usage_error(run_cli("verify", "--data-only"), "required: --to", "pmigrate verify --help")
