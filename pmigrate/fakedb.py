"""Fake Plik deployments for the demo, the tests and the benchmarks."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="DIR", help="folder to create the deployment in (must be empty or absent)")


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError
