"""Portable RLlib checkpoints: nothing in them names a folder of the machine that trained them.

An RLlib checkpoint pickles the algorithm's config into every ``class_and_ctor_args.pkl``. Checkpoints written
before :func:`agents.rllib_train.load_module_state` named the imitation clone there by absolute path
(``RLModuleSpec.load_state_path``), which ``Algorithm.from_checkpoint`` follows, and a ``--data-dir`` run named
its data folder in the env config; ``datagames_meta.json`` recorded the output folder (``out``).

:func:`resave_checkpoint` re-creates such a checkpoint rather than patching bytes: it builds a fresh algorithm
from the recorded settings (made portable by :func:`agents.rllib_train.portable_settings`), restores the old
checkpoint's state into it (module weights, optimiser, connector states, counters) and saves that, so the
pickles hold the new, path-free config. The metadata keeps the training record and says it was re-saved.

``python -m agents.portable OLD NEW`` (the data folder of a ``--data-dir`` run from ``$DATAGAMES_DATA_DIR``).
"""

from __future__ import annotations

import dataclasses
import json
import pickletools
import shutil
import sys
import tempfile
from pathlib import Path

from .rllib_train import META_FILE, TrainSettings, build_ppo_config, init_ray, move_data_dir_to_env, portable_settings


def absolute_paths_in(folder: str | Path) -> dict[str, list[str]]:
    """Every string in ``folder``'s pickles, JSON files and SB3 ``.zip`` models that is an absolute filesystem path,
    by file (relative to ``folder``). Portable checkpoints have none."""
    found: dict[str, list[str]] = {}
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        strings: list[str] = []
        if path.suffix == ".pkl":
            strings = _pickle_strings(path.read_bytes())
        elif path.suffix == ".json":
            strings = list(_json_strings(json.loads(path.read_text())))
        elif path.suffix == ".zip":
            strings = _zip_strings(path)
        hits = [s for s in strings if isinstance(s, str) and _looks_absolute(s)]
        if hits:
            found[str(path.relative_to(folder))] = hits
    return found


def _pickle_strings(data: bytes) -> list[str]:
    return [arg for _, arg, _ in pickletools.genops(data) if isinstance(arg, str)]


def _zip_strings(path: Path) -> list[str]:
    """The strings of an SB3 ``model.zip``: its ``data`` JSON, the base64 pickles SB3 puts in it (``:serialized:``),
    and the words of its text members (torch ``.pth`` members hold tensors, not paths)."""
    import base64
    import zipfile

    strings: list[str] = []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            raw = archive.read(name)
            if name.endswith(".pth"):
                continue
            try:
                value = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                strings.extend(raw.decode("utf-8", "replace").split())
                continue
            for text, serialized in _sb3_json_strings(value):
                if not serialized:
                    strings.append(text)
                    continue
                try:  # base64 text may itself look like a path: only the decoded pickle counts
                    strings.extend(_pickle_strings(base64.b64decode(text)))
                except ValueError:
                    strings.append(text)
    return strings


def _sb3_json_strings(value, serialized: bool = False):
    """(string, is it an SB3 ``:serialized:`` pickle) for every string of a JSON value, keys included."""
    if isinstance(value, str):
        yield value, serialized
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k, False
            yield from _sb3_json_strings(v, k == ":serialized:")
    elif isinstance(value, list):
        for v in value:
            yield from _sb3_json_strings(v)


def _json_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _json_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _json_strings(v)


def _looks_absolute(text: str) -> bool:
    # a POSIX path with at least two parts ("/" alone, "/1" or a URL are not folders), or a Windows drive path
    if text.startswith("/") and not text.startswith("//") and text.count("/") >= 2 and " " not in text:
        return True
    return len(text) > 3 and text[1:3] in (":\\", ":/") and text[0].isalpha()


def resave_checkpoint(old: str | Path, new: str | Path, note: str = "") -> Path:
    """Re-create the checkpoint ``old`` at ``new`` (see the module docstring); returns ``new``."""
    import ray

    old, new = Path(old), Path(new)
    meta = json.loads((old / META_FILE).read_text())
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    recorded = {k: v for k, v in meta["settings"].items() if k in fields}
    for key in ("hidden", "tune_lrs"):
        if key in recorded:
            recorded[key] = tuple(recorded[key])
    settings = move_data_dir_to_env(TrainSettings(**{**recorded, "progress": False, "resume": None}))
    init_ray(None, settings.torch_threads)
    algo = build_ppo_config(settings).build_algo()
    try:
        algo.restore_from_path(str(old.resolve()))
        with tempfile.TemporaryDirectory() as tmp:  # old and new may be the same folder
            staged = Path(tmp) / "checkpoint"
            algo.save_to_path(str(staged))
            if (old / "imitation_module").is_dir():
                shutil.copytree(old / "imitation_module", staged / "imitation_module")
            out = dict(meta)
            out["settings"] = portable_settings(dataclasses.replace(settings, resume=recorded.get("resume"),
                                                                    out=recorded.get("out") or "runs/train",
                                                                    overrides=meta["settings"].get("overrides", {})))
            if isinstance(out.get("imitation"), dict):
                out["imitation"] = {k: v for k, v in out["imitation"].items() if k != "module"}
                if (staged / "imitation_module").is_dir():
                    out["imitation"]["module"] = "imitation_module"
            out["resaved"] = {"by": "agents.portable.resave_checkpoint", "ray_version": ray.__version__,
                              "note": note or "re-created from a checkpoint that named folders of the training "
                                              "machine: same weights, optimiser state and counters"}
            (staged / META_FILE).write_text(json.dumps(out, indent=2, default=str))
            if new.exists():
                shutil.rmtree(new)
            shutil.copytree(staged, new)
    finally:
        algo.stop()
    return new


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m agents.portable OLD_CHECKPOINT NEW_CHECKPOINT")
    print(resave_checkpoint(sys.argv[1], sys.argv[2]))
    left = absolute_paths_in(sys.argv[2])
    if left:
        raise SystemExit(f"absolute paths left: {left}")
