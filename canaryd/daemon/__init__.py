"""The in-cluster daemon: reconciler (tick), leader election (Lease), HTTP probes, ``run``."""
