"""Recipe hyperparameter files: a variant is a set of overrides of a base file.

A recipe YAML may start with ``extends: <base.yaml>`` (a path relative to the
file). Its other keys then override the base's, the way command-line
overrides do, and the base may extend another file. This is how the recipes
keep one definition of each thing: ``conformer.yaml`` is
``efficient_conformer.yaml`` with another backbone, an ablation is
``qieemo.yaml`` with one module switched.

Merging rules (applied from the root base down to the file, then the
command-line overrides):

- a tagged value (``!new:``, ``!include:``, ``!ref`` ...) replaces the base's
  value whole, so ``backbone: !include:other.yaml`` swaps a backbone;
- an untagged mapping updates the base's mapping key by key (e.g. one
  argument of a ``!new:`` object, or an override passed to an ``!include:``);
- any other value replaces the base's;
- a key that overrides nothing is an error naming the file, so a typo never
  goes unnoticed.

``!include:`` paths are relative to the root base file (all recipe files of
a recipe sit in its ``hparams/`` folder), or name a file inside an installed
package as ``!include:<package>:<path>``: the recipes include the backbones as
``!include:qieemo_sb:hparams/backbones/conformer.yaml``, so a recipe folder
copied anywhere still finds them.

Example
-------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "base.yaml").write_text("lr: 0.1\\nlayer: !new:torch.nn.Linear\\n    in_features: 2\\n    out_features: 3\\n")
>>> _ = (folder / "variant.yaml").write_text("extends: base.yaml\\nlayer:\\n    out_features: 5\\n")
>>> hparams = load_hparams(folder / "variant.yaml", "lr: 0.5")
>>> hparams["lr"], hparams["layer"].out_features
(0.5, 5)
"""

import importlib.util
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import ruamel.yaml
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.tag import Tag
from hyperpyyaml import load_hyperpyyaml, resolve_references

Overrides = Optional[Union[str, Mapping]]


def _yaml() -> ruamel.yaml.YAML:
    return ruamel.yaml.YAML()  # round-trip: keeps HyperPyYAML's tags


def yaml_tag(node) -> Optional[str]:
    """The HyperPyYAML tag of a round-trip YAML node (``"!new:..."``), or None."""
    tag = getattr(getattr(node, "tag", None), "value", None)
    return tag if tag and tag.startswith("!") else None


def _names_a_package(spec: str) -> bool:
    """Whether an ``!include:`` spec has the ``<package>:<path>`` form."""
    package, separator, _ = spec.partition(":")
    return bool(separator) and all(part.isidentifier() for part in package.split("."))


def include_path(spec: str, root_dir: Path) -> Path:
    """The file of ``!include:<spec>``: ``<package>:<path>`` inside an installed package, else ``root_dir/spec``.

    >>> include_path("qieemo_sb:hparams/backbones/conformer.yaml", Path(".")).is_file()
    True
    >>> include_path("variant.yaml", Path("/recipe/hparams")).as_posix()
    '/recipe/hparams/variant.yaml'
    """
    if not _names_a_package(spec):
        return root_dir / spec
    package, _, inner = spec.partition(":")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"!include:{spec}: '{package}' is not an installed package")
    return Path(next(iter(found.submodule_search_locations))) / inner


def _include_target(node, root_dir: Path) -> Optional[Path]:
    """The file an ``!include:`` node loads, or None for any other node."""
    tag = yaml_tag(node)
    if tag is None or not tag.startswith("!include:"):
        return None
    return include_path(tag[len("!include:"):], root_dir)


def _locate_package_includes(node, root_dir: Path) -> None:
    """Rewrites every ``!include:<package>:<path>`` in the tree as the file's absolute path.

    HyperPyYAML itself only knows paths relative to the file it reads.
    """
    tag = yaml_tag(node) or ""
    spec = tag[len("!include:"):] if tag.startswith("!include:") else ""
    if _names_a_package(spec):
        node.yaml_set_ctag(Tag(suffix=f"!include:{include_path(spec, root_dir)}"))
    children = node.values() if isinstance(node, Mapping) else node if isinstance(node, list) else ()
    for child in children:
        _locate_package_includes(child, root_dir)


def _merge(base, override, source: str, root_dir: Path, path: str = ""):
    """Applies ``override`` onto ``base`` in place (rules in the module docstring)."""
    included = _include_target(base, root_dir)
    # Arguments of an !include: must be keys of the included file: HyperPyYAML
    # would add an unknown one there silently, and it would change nothing.
    known = set(_read(included).keys()) if included else set(base.keys())
    for key, value in override.items():
        where = f"{path}{key}"
        if key not in known:
            raise KeyError(
                f"{source}: '{where}' overrides nothing in "
                f"{included or 'its base'} (known keys: {', '.join(sorted(map(str, known)))})"
            )
        base_value = base.get(key)
        if isinstance(value, Mapping) and yaml_tag(value) is None:
            if not isinstance(base_value, Mapping) and _include_target(base_value, root_dir):
                # `!include:x.yaml` with no arguments yet: give it some.
                arguments = CommentedMap()
                arguments.yaml_set_ctag(Tag(suffix=yaml_tag(base_value)))
                base[key] = base_value = arguments
            if isinstance(base_value, Mapping):
                _merge(base_value, value, source, root_dir, f"{where}.")
                continue
        base[key] = value


def _read(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"hyperparameter file not found: {path}")
    tree = _yaml().load(path.read_text(encoding="utf-8"))
    if not isinstance(tree, Mapping):
        raise ValueError(f"{path}: a hyperparameter file must be a YAML mapping")
    return tree


def compose_hparams(hparams_file: Union[str, Path], overrides: Overrides = None) -> Tuple[str, Path]:
    """Merges a file, its chain of bases and the overrides into one YAML text.

    Returns
    -------
    text : str
        The merged YAML, with HyperPyYAML tags not yet resolved.
    root : Path
        The root base file (relative ``!include:`` paths start from its folder).
    """
    chain: List[Tuple[Path, Mapping]] = []
    path = Path(hparams_file).resolve()
    while True:
        if any(path == seen for seen, _ in chain):
            raise ValueError(f"{hparams_file}: 'extends' loops back to {path}")
        tree = _read(path)
        base = tree.pop("extends", None)
        chain.append((path, tree))
        if base is None:
            break
        path = (path.parent / str(base)).resolve()
    root, merged = chain[-1]
    for source, tree in reversed(chain[:-1]):
        if source.parent != root.parent:
            raise ValueError(
                f"{source} extends {root}, which is in another folder: keep a "
                "recipe's files in one hparams/ folder"
            )
        _merge(merged, tree, str(source), root.parent)
    if overrides:
        if isinstance(overrides, str):
            overrides = _yaml().load(overrides)
        _merge(merged, overrides or {}, "command-line overrides", root.parent)
    _locate_package_includes(merged, root.parent)
    text = io.StringIO()
    _yaml().dump(merged, text)
    return text.getvalue(), root


def _stream(text: str, root: Path) -> io.StringIO:
    stream = io.StringIO(text)
    stream.name = str(root)  # HyperPyYAML resolves !include: beside this name
    return stream


def load_hparams(hparams_file: Union[str, Path], overrides: Overrides = None) -> Dict:
    """Loads a recipe hyperparameter file (with ``extends``) into objects."""
    text, root = compose_hparams(hparams_file, overrides)
    return load_hyperpyyaml(_stream(text, root))


def resolved_hparams_text(hparams_file: Union[str, Path], overrides: Overrides = None) -> str:
    """The merged file with every ``!ref`` and ``!include:`` resolved.

    Self-contained: written beside a run's outputs, it rebuilds the same
    objects without the recipe's other files.
    """
    text, root = compose_hparams(hparams_file, overrides)
    return resolve_references(_stream(text, root)).getvalue()


def create_experiment_folder(
    output_folder: Union[str, Path], hparams_file: Union[str, Path], overrides: Overrides = None
) -> None:
    """Creates a run's output folder with its logs and resolved ``hyperparams.yaml``.

    SpeechBrain's ``create_experiment_directory`` sets up the logs; the
    hyperparameters written beside them are :func:`resolved_hparams_text`
    rather than a copy of the recipe file, so the run folder rebuilds the same
    objects on its own.
    """
    # Imported here: loading a YAML should not pull in SpeechBrain's logging set-up.
    import speechbrain as sb
    from speechbrain.utils.distributed import if_main_process

    sb.create_experiment_directory(experiment_directory=str(output_folder))
    if if_main_process():
        Path(output_folder, "hyperparams.yaml").write_text(
            resolved_hparams_text(hparams_file, overrides), encoding="utf-8"
        )
