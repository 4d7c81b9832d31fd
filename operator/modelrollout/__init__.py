"""modelrollout: staged, Prometheus-judged releases of ML model servers on Kubernetes."""

__version__ = "0.1.0"
