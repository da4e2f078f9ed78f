"""Run by the system Python (Debian's python3-gi), not the project's venv: GLib's key-file parser and
GStreamer's pipeline parser, the very ones nvinfer, deepstream-app and gst-launch-1.0 use.

    python3 gst_glib_check.py keyfile FILE GROUP:KEY:GETTER ...   -> JSON {"GROUP:KEY": value}, or {"error": ...}
    python3 gst_glib_check.py groups FILE                          -> JSON {"GROUP": [keys]}
    python3 gst_glib_check.py parse DESCRIPTION                    -> JSON {"error", "code", "missing"}

``parse`` only builds the pipeline (gst_parse_launch_full), it never sets it playing.
"""

from __future__ import annotations

import json
import sys


def keyfile(path: str, specs: list[str]) -> dict:
    from gi.repository import GLib

    kf = GLib.KeyFile()
    try:
        kf.load_from_file(path, GLib.KeyFileFlags.NONE)
    except GLib.Error as exc:
        return {"error": exc.message}
    values = {}
    for spec in specs:
        group, key, getter = spec.split(":")
        try:
            value = {"integer": kf.get_integer, "double": kf.get_double, "string": kf.get_string,
                     "boolean": kf.get_boolean, "integer_list": kf.get_integer_list, "double_list": kf.get_double_list,
                     "string_list": kf.get_string_list}[getter](group, key)
        except GLib.Error as exc:
            return {"error": f"{group}:{key}: {exc.message}"}
        values[spec.rsplit(":", 1)[0]] = list(value) if isinstance(value, (list, tuple)) else value
    return values


def groups(path: str) -> dict:
    from gi.repository import GLib

    kf = GLib.KeyFile()
    kf.load_from_file(path, GLib.KeyFileFlags.NONE)
    names, _ = kf.get_groups()
    return {g: list(kf.get_keys(g)[0]) for g in names}


def parse(description: str) -> dict:
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import GLib, Gst

    Gst.init(None)
    context = Gst.ParseContext.new()
    try:
        Gst.parse_launch_full(description, context, Gst.ParseFlags.FATAL_ERRORS)
    except GLib.Error as exc:
        return {"error": exc.message, "code": exc.code, "missing": list(context.get_missing_elements() or [])}
    return {"error": None, "code": None, "missing": list(context.get_missing_elements() or [])}


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "keyfile":
        result = keyfile(rest[0], rest[1:])
    elif command == "groups":
        result = groups(rest[0])
    else:
        result = parse(rest[0])
    print(json.dumps(result))
