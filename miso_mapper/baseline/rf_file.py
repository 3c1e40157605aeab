"""The RF-11 model file: skops instead of pickle, a JSON card beside it, and one explicit way out of old pickles.

``<name>.skops`` holds the forests as a skops archive (arrays in numpy's own format and a JSON schema saying
how to rebuild the objects); ``<name>.json`` is the card (setting, feature names, CRS, classes,
hyper-parameters, training size, versions). A card without ``setting`` (written before settings
existed) describes a legacy model on the raster features plus grid x/y metres
(:data:`~miso_mapper.baseline.rf.LEGACY_FEATURES`); it loads and maps with exactly those features.
Reading never unpickles. The schema is audited first against :data:`RF_NODES`, the node kinds and types our
own files are made of and nothing else (skops on its own would also build every scikit-learn estimator), and
skops is then given exactly :data:`TRUSTED_TYPES`.

Files of earlier versions (``joblib.dump``: a pickle, which runs code while it is read) are refused by their
first bytes with the command that converts them: ``miso-mapper rf convert OLD NEW --trust-pickle`` unpickles
in the user's own shell, after that explicit flag (:func:`convert_pickled_rf`); it is the only place in the
package that reads a pickle.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.baseline.rf import LEGACY_FEATURES, LEGACY_SETTING, SETTINGS, RFModel
from miso_mapper.errors import MisoError
from miso_mapper.filekind import DESCRIPTION, file_kind

#: (skops loader, type) of every node an RF-11 file may hold: what skops writes for our forests.
RF_NODES: frozenset[tuple[str, str]] = frozenset({
    ("DictNode", "builtins.dict"), ("ListNode", "builtins.list"), ("TupleNode", "builtins.tuple"),
    ("JsonNode", "builtins.str"), ("TypeNode", "builtins.str"),
    ("NdArrayNode", "numpy.ndarray"), ("NdArrayNode", "numpy.int64"),
    ("ObjectNode", "sklearn.ensemble._forest.RandomForestClassifier"),
    ("ObjectNode", "sklearn.tree._classes.DecisionTreeClassifier"),
    ("TreeNode", "sklearn.tree._tree.Tree"),
})
#: The ``trusted`` list given to ``skops.io.load``: the forest, tree and numpy types of :data:`RF_NODES`.
TRUSTED_TYPES: list[str] = sorted({t for _, t in RF_NODES if not t.startswith("builtins.")})
TASKS = ("permafrost", "taxonomy")
FOREST = "sklearn.ensemble._forest.RandomForestClassifier"


def save_rf(model: RFModel, path: Path) -> tuple[Path, Path]:
    """Write the forests to ``path`` (skops; name it ``.skops``) and the card to ``path.with_suffix('.json')``,
    each atomically; returns both paths. The written file is audited like a file being loaded."""
    import sklearn
    import skops.io

    from miso_mapper import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        skops.io.dump(model.forests, tmp)
        audit_rf_schema(tmp)  # a scikit-learn release with new attribute types shows up here, not at load
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    card = dict(model.card) | {"format": "rf11", "file_format": "skops", "sklearn_version": sklearn.__version__,
                               "software_version": __version__, "class_names": {"taxonomy": list(SOIL_ORDERS)}}
    card_path = path.with_suffix(".json")
    tmp_card = card_path.with_name(card_path.name + ".tmp")
    tmp_card.write_text(json.dumps(card, indent=1))
    os.replace(tmp_card, card_path)
    return path, card_path


def load_rf(path: Path) -> RFModel:
    """Read a model written by :func:`save_rf` after :func:`check_rf_file`; never unpickles (MisoError for a
    missing, pickled, crafted or foreign file)."""
    import skops.io

    path = Path(path)
    card = check_rf_file(path)
    try:
        forests = skops.io.load(path, trusted=TRUSTED_TYPES)
    except Exception as exc:  # noqa: BLE001 - any failure to rebuild is the file's fault
        raise MisoError(f"cannot read RF-11 model {path}: {type(exc).__name__}: {exc}") from None
    _check_forests(forests, path)
    return RFModel(forests, card)


def check_rf_file(path: Path) -> dict[str, Any]:
    """The card of ``path`` if it is an RF-11 file :func:`load_rf` reads: a skops file made only of
    :data:`RF_NODES` with one forest per task of its card. Reads the card and the schema, builds nothing."""
    path = Path(path)
    if not path.is_file():
        raise MisoError(f"RF-11 model {path} does not exist")
    kind = file_kind(path)
    if kind in ("pickle", "joblib"):
        raise MisoError(f"{path}: an RF-11 model in the old pickle format, which runs code when read, so it is not "
                        f"read; if you made it yourself, convert it once: miso-mapper rf convert {path} "
                        f"{path.with_suffix('.skops')} --trust-pickle (or re-train it)")
    if kind != "skops":
        raise MisoError(f"{path}: {DESCRIPTION[kind]}, not an RF-11 model (a skops file written by save_rf)")
    card = read_rf_card(path)
    tasks = audit_rf_schema(path)
    if sorted(tasks) != sorted(card["tasks"]):
        raise MisoError(f"{path}: holds forests for {', '.join(tasks)} but its card describes "
                        f"{', '.join(card['tasks'])}")
    return card


def read_rf_card(path: Path) -> dict[str, Any]:
    """The card beside RF-11 model ``path`` (``.json``), checked: format rf11, a known setting with its features
    in order (a card without ``setting``, from earlier versions: the legacy x/y-metre features), known tasks."""
    card_path = Path(path).with_suffix(".json")
    if not card_path.is_file():
        raise MisoError(f"RF-11 model {path}: its card {card_path.name} does not exist")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MisoError(f"{card_path}: not a readable RF-11 card ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != "rf11":
        raise MisoError(f"{card_path} is not an RF-11 card")
    setting = card.get("setting", LEGACY_SETTING)
    expected = LEGACY_FEATURES if setting == LEGACY_SETTING else getattr(SETTINGS.get(setting), "features", None)
    if expected is None or card.get("features") != list(expected):
        raise MisoError(f"{card_path}: setting {setting!r} with features {card.get('features')} is not a known "
                        f"RF-11 setting with its features in order ({', '.join(SETTINGS)}; no setting: the "
                        f"{LEGACY_SETTING} features)")
    tasks = card.get("tasks")
    if not isinstance(tasks, dict) or not tasks or not set(tasks) <= set(TASKS):
        raise MisoError(f"{card_path}: tasks must be some of {', '.join(TASKS)}, got {tasks!r}")
    return card


def audit_rf_schema(path: Path) -> list[str]:
    """The tasks (top-level keys) of skops file ``path`` if every node of its schema is in :data:`RF_NODES`
    and each task holds a forest; else :class:`MisoError` naming the first foreign types."""
    try:
        with zipfile.ZipFile(path) as z:
            schema = json.loads(z.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MisoError(f"{path}: not a readable skops file ({exc})") from None
    foreign = sorted({f"{loader} {kind}" for loader, kind in _nodes(schema)} - {f"{a} {b}" for a, b in RF_NODES})
    if foreign:
        more = f" (+{len(foreign) - 5} more)" if len(foreign) > 5 else ""
        raise MisoError(f"{path}: holds {', '.join(foreign[:5])}{more}, which an RF-11 model is not made of; "
                        "refused before anything was built")
    content = schema.get("content") if schema.get("__loader__") == "DictNode" else None
    if not isinstance(content, dict) or not content or not set(content) <= set(TASKS) or any(
            not isinstance(v, dict) or f"{v.get('__module__')}.{v.get('__class__')}" != FOREST
            for v in content.values()):
        raise MisoError(f"{path}: not RF-11 forests (expected a forest per task of {', '.join(TASKS)})")
    return list(content)


def _nodes(tree: Any) -> list[tuple[str, str]]:
    """(loader, module.class) of every skops node anywhere in a schema."""
    found = []
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__loader__" in item:
                found.append((str(item["__loader__"]), f"{item.get('__module__')}.{item.get('__class__')}"))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _check_forests(forests: Any, path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    if not isinstance(forests, dict) or not all(isinstance(v, RandomForestClassifier) for v in forests.values()):
        raise MisoError(f"{path} does not hold RF-11 forests")


def convert_pickled_rf(old: Path, new: Path) -> tuple[Path, Path]:
    """Rewrite a pickled RF-11 model (``joblib``, earlier versions of :func:`save_rf`) and its card as
    :func:`save_rf` files at ``new``. **This unpickles ``old``, which runs any code in it**: call it only for a
    file the user made, on their explicit word (``miso-mapper rf convert --trust-pickle``)."""
    import joblib

    old, new = Path(old), Path(new)
    if not old.is_file():
        raise MisoError(f"RF-11 model {old} does not exist")
    if file_kind(old) not in ("pickle", "joblib"):
        raise MisoError(f"{old}: {DESCRIPTION[file_kind(old)]}, not a pickled RF-11 model")
    if new.resolve() == old.resolve():
        raise MisoError(f"give the converted model another path than {old}")
    card = read_rf_card(old)
    try:
        forests = joblib.load(old)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
        raise MisoError(f"cannot read pickled RF-11 model {old}: {type(exc).__name__}: {exc}") from None
    _check_forests(forests, old)
    if sorted(forests) != sorted(card["tasks"]):
        raise MisoError(f"{old}: holds forests for {', '.join(forests)} but its card describes "
                        f"{', '.join(card['tasks'])}")
    return save_rf(RFModel(forests, card | {"converted_from": str(old)}), new)
