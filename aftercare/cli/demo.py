"""`demo`: sample patients on a throw-away database; reads no config."""

from __future__ import annotations

import sys

import click

from aftercare.demo import run_demo


@click.command()
def demo() -> None:
    """Play three sample patients' whole timelines in seconds (temporary database)."""
    run_demo(sys.stdout)
