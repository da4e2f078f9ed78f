"""What this machine can do: its arithmetic limits (``peak``)."""
