"""The semantic step as the entry points run it: before a model's dataset is built.

:func:`prepare_semantics` is what :mod:`recbole_llm.quick_start` calls for every dataset it
builds (training, ``HyperTuning`` trials, benchmark workers, reloading a checkpoint): it checks
the semantic files a model needs against the run's settings, runs the step when they are missing
or stale and ``auto_semantics`` allows it, and hands the checked manifest to the dataset through
the files contract (:func:`recbole_llm.semantics.files.attach_manifest`). A Dataset constructor
never runs an LLM; this module is the only one that knows both :mod:`recbole_llm.data` and
:mod:`recbole_llm.semantics`, and it gives the pipeline the plain RecBole dataset it reads.
"""

from logging import getLogger

from recbole.data.dataset import SequentialDataset

from recbole_llm.data.prepare import ensure_dataset
from recbole_llm.data.utils import warn_duplicate_interactions
from recbole_llm.semantics import files, pipeline
from recbole_llm.semantics.files import SemanticsError
from recbole_llm.semantics.settings import command, settings


def plain_dataset(config):
    """RecBole's own sequential dataset for a config (never a semantic one): what the semantic
    step reads. A known dataset missing from the data root is prepared first."""
    ensure_dataset(config)
    dataset = SequentialDataset(config)
    warn_duplicate_interactions(dataset)
    return dataset


def run_pipeline(config, kind, refresh=False):
    """Run one semantic pipeline (``"eimf"`` or ``"llm4sbr"``) on the config's dataset and write
    its files and manifest; returns the manifest path. ``refresh`` regenerates the replies."""
    return pipeline.run_pipeline(config, kind, lambda: plain_dataset(config), refresh=refresh)


def load_or_create(config, kind):
    """The valid manifest of a dataset's semantics, running the step first when they are
    missing or stale and ``auto_semantics`` allows it."""
    wanted = settings(config, kind)
    try:
        manifest = files.read_manifest(config, kind, wanted, command(config, kind))
    except SemanticsError as err:
        if not config["auto_semantics"]:
            raise
        if isinstance(err, files.MissingSemantics):  # a first run: nothing is wrong
            getLogger().info(
                f"No {kind} semantics for dataset '{config['dataset']}' yet: auto_semantics "
                f"is on, so the semantic step runs now (alone: {command(config, kind)})."
            )
        else:  # stale or damaged files are replaced: say so
            # the message ends in a command; keep the next sentence apart from its last flag
            getLogger().warning(f"{err} | auto_semantics is on: running the semantic step now.")
        run_pipeline(config, kind)
        manifest = files.read_manifest(config, kind, wanted, command(config, kind))
    failed = (manifest.get("generation") or {}).get("failed", 0)
    if failed:
        getLogger().warning(
            f"{files.manifest_path(config, kind)} was made although {failed} LLM requests "
            "failed (llm_max_failure_ratio allowed it): their semantics are fallbacks. To ask "
            f"them again: {command(config, kind)}"
        )
    return manifest


#: Pipelines whose model predicts without its semantics (EIMF falls back to its backbone):
#: with ``semantics_required: False`` (a checkpoint reloaded for inference) their files are
#: used if present and valid, and never created.
OPTIONAL_FOR_INFERENCE = ("eimf",)


def prepare_semantics(config):
    """Make sure the semantic files the config's model needs are there and current, and attach
    their manifest to ``config`` for the dataset built next; returns it (None for models
    without semantics, or when optional semantics are skipped)."""
    kind = getattr(config.model_class, "semantics", None)
    if kind is None:
        return None
    if kind in OPTIONAL_FOR_INFERENCE and config["semantics_required"] is False:
        try:
            manifest = files.read_manifest(config, kind, settings(config, kind), "")
        except (SemanticsError, OSError, RuntimeError) as err:
            # e.g. no semantic files, or the LLM they were made with is not installed here
            getLogger().info(f"No semantics loaded (not needed for inference): {err}")
            manifest = None
    else:
        manifest = load_or_create(config, kind)
    files.attach_manifest(config, kind, manifest)
    return manifest
