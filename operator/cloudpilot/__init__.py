"""CloudPilot: a Kubernetes operator that keeps grid pilot VMs alive through apache-libcloud."""

__version__ = "0.1.0"
