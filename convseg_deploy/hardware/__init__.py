"""Probes of this machine's hardware: ``cpu`` (model, microarchitecture, instruction sets) and its
arithmetic limits (``peak`` measured, ``limits`` theoretical)."""
