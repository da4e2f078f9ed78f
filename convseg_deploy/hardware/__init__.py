"""Probes of this machine's hardware: ``cpu`` (model, microarchitecture, instruction sets)."""
