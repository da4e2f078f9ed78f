"""Triton Inference Server, from the serving side: the client calls (``client``: bench's load
test, ``live --backend triton``) and the model that runs inside the server's Python backend
(``server_model``, copied into a repository as ``model.py``). Writing a repository from exported
files is building files from files, so it stays with the exporters (``exporters/triton_repo.py``)."""
