"""`modelrollout-lab up` and `modelrollout-lab demo` (the [lab] extra; never part of the operator image)."""

from __future__ import annotations

import time

import click


@click.group()
def main() -> None:
    """A local lab: emulated Kubernetes API, simulated model traffic, real Prometheus, real operator."""


@main.command()
@click.option("--workdir", default=None, help="Where the kubeconfig and logs go (a temporary folder when unset).")
@click.option("--seed", type=int, default=0)
@click.option("--no-operator", is_flag=True, help="Run everything but the operator (run it yourself).")
def up(workdir: str | None, seed: int, no_operator: bool) -> None:
    """Keep a lab running until Ctrl-C; apply examples to it with kubectl."""
    from modelrollout_lab.lab import Lab

    with Lab(workdir, seed=seed) as running:
        if not no_operator:
            running.start_operator()
        assert running.prometheus is not None
        click.echo(f"kubeconfig:  {running.kubeconfig}")
        click.echo(f"prometheus:  {running.prometheus.url}")
        click.echo(f"operator log: {running.workdir / 'operator.log'}")
        click.echo(f"try:  KUBECONFIG={running.kubeconfig} kubectl apply -f examples/lab-fraud-detector.yaml")
        click.echo("Ctrl-C stops the lab and cleans up.")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            click.echo("stopping the lab")


@main.command()
@click.option("--png", default="demo-timeline.png", show_default=True, help="Where to write the timeline.")
@click.option("--workdir", default=None)
def demo(png: str, workdir: str | None) -> None:
    """v1 becomes stable, v2 (good) is promoted, v3 (bad) is rolled back - live, in the lab."""
    from modelrollout_lab.demo import run_demo

    summary = run_demo(png, workdir=workdir)
    results = [row["result"] for row in summary]
    if results != ["Initialized", "Promoted", "RolledBack"]:
        raise click.ClickException(f"the demo did not tell its story: {results}")
