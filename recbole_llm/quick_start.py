"""Entry points: RecBole's quick-start functions, resolving recbole_llm models first.

- :func:`run_recbole_llm`: one training run, returns RecBole's result dict.
- :func:`run`: the same with RecBole's multi-process arguments; workers resolve our models.
- :func:`objective_function`: the target for RecBole's ``HyperTuning``.
- :func:`load_data_and_model`: reload any checkpoint our entry points wrote.
- :func:`create_dataset`: the dataset of a config, its semantic files made or checked first
  (every function above builds its dataset so; a Dataset constructor never runs an LLM);
  :func:`build_model`: its model, with the text-aware baselines' item-text initialisation.
"""

import json
import logging
import os
import sys
from collections.abc import MutableMapping
from logging import getLogger

from recbole.data.transform import construct_transform
from recbole.utils import get_environment, get_flops, init_logger, init_seed, set_color

from recbole_llm import compat, registry
from recbole_llm.config import Config, restore_config
from recbole_llm.data.checks import check_atomic_files
from recbole_llm.data.evaluation import protocol_of
from recbole_llm.data.item_text import ItemTextDataset, init_item_embeddings, item_text_source
from recbole_llm.data.prepare import ensure_dataset
from recbole_llm.data.utils import build_dataset, data_preparation
from recbole_llm.errors import UserError
from recbole_llm.semantic_step import prepare_semantics, run_pipeline
from recbole_llm.utils import atomic_write


def make_output_dirs(config):
    """Create RecBole's output folders up front: its ``ensure_dir`` checks, then creates, so
    ranks of a distributed run starting together race on it (``FileExistsError``)."""
    os.makedirs(os.path.join("log", config["model"]), exist_ok=True)
    os.makedirs(config["checkpoint_dir"], exist_ok=True)


def create_dataset(config):
    """The dataset a config describes, as RecBole's ``create_dataset`` builds it: a known
    dataset missing from the data root is prepared, the atomic files are checked, the semantic
    files the model needs are made or checked (:func:`recbole_llm.semantic_step.prepare_semantics`),
    then the dataset is built, or a still valid pickle of it reused. An ``eval_protocol`` the
    run cannot use fails first."""
    protocol_of(config)
    text_source = item_text_source(config)
    ensure_dataset(config)
    check_atomic_files(config)
    prepare_semantics(config)
    dataset_class = registry.get_dataset_class(config)
    if text_source != "none" and not config["dataset_class"]:
        dataset_class = ItemTextDataset  # a text-aware baseline: EIMF's or LLM4SBR's item text
    return build_dataset(config, dataset_class)


def build_model(config, dataset, checkpoint=False):
    """The config's model on ``dataset`` (a training split), with RecBole's feature-aware
    models fixed (:func:`recbole_llm.compat.fix_feature_models`) and, unless a ``checkpoint``
    will be loaded into it, its item embeddings initialised from item text (``item_text_init``:
    :func:`recbole_llm.data.item_text.init_item_embeddings`)."""
    model = registry.get_model(config["model"])(config, dataset).to(config["device"])
    compat.fix_feature_models(model)
    method = config["item_text_init"] or "none"
    if method != "none" and not checkpoint:
        if not hasattr(dataset, "item_text_matrix"):
            raise UserError(
                f"item_text_init: dataset class {type(dataset).__name__} holds no item text; "
                "leave dataset_class unset (item_text_source picks ItemTextDataset)"
            )
        init_item_embeddings(model, dataset.item_text_matrix(), method, config["seed"])
        getLogger().info(f"item embeddings initialised from item text ({method} projection)")
    return model


def _build(config):
    """Dataset, dataloaders, model and trainer for a config (seeded as RecBole does)."""
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = build_model(config, train_data._dataset)
    trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"], config["trainer_class"])(
        config, model
    )
    return dataset, model, trainer, (train_data, valid_data, test_data)


def train_and_test(config, saved=True, verbose=True):
    """Build, train and test the model a config describes (logger already set up).

    Returns:
        tuple: RecBole's result dict; the trainer (it holds ``epoch_seconds``,
        ``eval_seconds`` and per-user metric values of the test evaluation); the test loader.
    """
    logger = getLogger()
    dataset, model, trainer, (train_data, valid_data, test_data) = _build(config)
    if verbose:
        logger.info(dataset)
        logger.info(model)
        flops = get_flops(model, dataset, config["device"], logger, construct_transform(config))
        logger.info(set_color("FLOPs", "blue") + f": {flops}")

    epoch_tests = EpochTests(config, trainer, test_data) if config["test_every_epoch"] else None
    # RecBole's LightGBM and XGBoost trainers (DecisionTreeTrainer.fit) take no callback_fn
    hook = {"callback_fn": epoch_tests} if epoch_tests is not None else {}
    best_valid_score, best_valid_result = trainer.fit(
        train_data,
        valid_data,
        verbose=verbose,
        saved=saved,
        show_progress=config["show_progress"],
        **hook,
    )
    test_result = trainer.evaluate(
        test_data, load_best_model=saved, show_progress=config["show_progress"]
    )
    result = {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }
    if epoch_tests is not None:
        trainer.epoch_test_results = result["epoch_test_results"] = epoch_tests.results
    return result, trainer, test_data


class EpochTests:
    """``test_every_epoch``: after each validation, the test metrics of the model as it is then
    (``results``: ``[{"epoch": e, "valid_score": v, "ndcg@10": ...}, ...]``), for LLM4SBR's
    paper mode, which reports the best test value of each metric over epochs: a selection on
    test, never used to pick a checkpoint here. The trainer's callback after each validation;
    with a ``training_state_file`` the results are kept beside it (written before the state),
    so a resumed run keeps the epochs it had evaluated."""

    def __init__(self, config, trainer, test_data):
        self.trainer, self.test_data = trainer, test_data
        self.show_progress = config["show_progress"]
        state_file = config["training_state_file"]
        self.path = f"{state_file}.epoch_tests.json" if state_file else None
        self.results = []
        if self.path and os.path.exists(state_file) and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.results = json.load(f)

    def __call__(self, epoch_idx, valid_score):
        result = self.trainer.evaluate(
            self.test_data, load_best_model=False, show_progress=self.show_progress
        )
        # a resumed run repeats no epoch; the file may hold one its state had not recorded
        self.results = [r for r in self.results if r["epoch"] < epoch_idx]
        tested = {k: float(v) for k, v in result.items()}
        self.results.append({"epoch": epoch_idx, "valid_score": float(valid_score), **tested})
        if self.path:
            atomic_write(self.path, lambda f: json.dump(self.results, f))


def run_recbole_llm(
    model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, queue=None
):
    """Train and test one model on one dataset, as ``recbole.quick_start.run_recbole`` does.

    Args:
        model (str): model class name (ours or RecBole's).
        dataset (str): dataset name; defaults to the model YAML's ``default_dataset``.
        config_file_list (list of str): YAML config files.
        config_dict (dict): parameters that override the files.
        saved (bool): save the best checkpoint and reload it for the test evaluation.
        queue: a multiprocessing queue that rank 0 puts the result on (used by :func:`run`).

    Returns:
        dict: ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``,
        ``test_result``.
    """
    config = Config(
        model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict
    )
    init_seed(config["seed"], config["reproducibility"])
    make_output_dirs(config)
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    result, _, _ = train_and_test(config, saved=saved)

    logger.info(
        "The running environment of this training is as follows:\n" + get_environment(config).draw()
    )
    logger.info(set_color("best valid ", "yellow") + f": {result['best_valid_result']}")
    logger.info(set_color("test result", "yellow") + f": {result['test_result']}")
    if not config["single_spec"]:
        import torch.distributed as dist

        dist.destroy_process_group()
    if config["local_rank"] == 0 and queue is not None:
        queue.put(result)
    return result


def run_recbole_llms(rank, *args):
    """Worker for :func:`run`: one rank of a distributed run (spawned by torch)."""
    kwargs = args[-1]
    if not isinstance(kwargs, MutableMapping):
        raise ValueError(f"the last argument must be a dict, got {type(kwargs).__name__}")
    import torch

    config_dict = dict(kwargs.get("config_dict") or {})
    config_dict["local_rank"] = rank
    if not torch.cuda.is_available():
        # ranks share the CPU cores; oversubscribing them makes every rank slower
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, config_dict["nproc"])))
    run_recbole_llm(*args[:3], config_dict=config_dict, queue=kwargs.get("queue"))


def prepare_before_ranks(model, dataset, config_file_list=None, config_dict=None):
    """A distributed run's data and semantic files, made (or checked) once in the launching
    process before its ranks start: each rank then finds them current and only reads them,
    instead of every rank preparing the dataset and running the LLM step at once."""
    config = Config(
        model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict
    )
    ensure_dataset(config)
    if getattr(config.model_class, "semantics", None) is not None:
        check_atomic_files(config)
        init_seed(config["seed"], config["reproducibility"])  # the files a single run makes
        prepare_semantics(config)


def run(
    model,
    dataset,
    config_file_list=None,
    config_dict=None,
    saved=True,
    nproc=1,
    world_size=-1,
    ip="localhost",
    port="5678",
    group_offset=0,
):
    """Train and test, in one process or ``nproc`` distributed ones (RecBole's ``run``).

    Distributed runs use NCCL on GPUs and gloo on the CPU. For several machines, call this on
    each with the total ``world_size`` and that machine's first global rank as
    ``group_offset``.
    """
    if nproc == 1 and world_size <= 0:
        return run_recbole_llm(
            model=model,
            dataset=dataset,
            config_file_list=config_file_list,
            config_dict=config_dict,
            saved=saved,
        )
    import torch.multiprocessing as mp

    prepare_before_ranks(model, dataset, config_file_list, config_dict)
    if world_size == -1:
        world_size = nproc
    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {})
    config_dict.update(
        {"world_size": world_size, "ip": ip, "port": port, "nproc": nproc, "offset": group_offset}
    )
    kwargs = {"config_dict": config_dict, "queue": queue}
    mp.spawn(
        run_recbole_llms, args=(model, dataset, config_file_list, kwargs), nprocs=nproc, join=True
    )
    return None if queue.empty() else queue.get()


def run_semantics(model, dataset=None, config_file_list=None, config_dict=None, refresh=False):
    """Run only the LLM-semantics step a model needs (EIMF, LLM4SBR); returns the manifest path.

    Replies and embeddings come from the cache when they exist; ``refresh`` regenerates the
    replies.
    """
    config = Config(
        model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict
    )
    kind = getattr(config.model_class, "semantics", None)
    if kind is None:
        raise UserError(
            f"Model {config['model']} uses no LLM semantics; --semantics applies to models that "
            "do (EIMF, LLM4SBR)."
        )
    check_atomic_files(config)
    init_seed(config["seed"], config["reproducibility"])
    make_output_dirs(config)
    init_logger(config)
    getLogger().info(config)
    return run_pipeline(config, kind, refresh=refresh)


def _report_to_ray(result):
    """Report to ray tune only inside a ray tune trial (RecBole calls it unconditionally)."""
    if "ray" not in sys.modules:
        return
    from ray import tune

    if tune.is_session_enabled():
        tune.report(**result)


def objective_function(config_dict=None, config_file_list=None, saved=True):
    """Train and test once for RecBole's ``HyperTuning``; returns its result dict.

    The dict includes ``model`` (``HyperTuning.trial`` reads it). Nothing is sent to ray unless
    the call runs inside a ray tune trial.
    """
    config = Config(config_dict=config_dict, config_file_list=config_file_list)
    init_seed(config["seed"], config["reproducibility"])
    logger = getLogger()
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
    make_output_dirs(config)
    init_logger(config)
    logging.basicConfig(level=logging.ERROR)
    result, _, _ = train_and_test(config, saved=saved, verbose=False)
    _report_to_ray(result["test_result"])
    return {"model": config["model"], **result}


_SINGLE_PROCESS = {"single_spec": True, "local_rank": 0}


def load_data_and_model(model_file, config_dict=None, trust_checkpoint=False):
    """Reload a checkpoint written by our entry points, with its dataset and dataloaders.

    The checkpoint must match the checksum file beside it, and is loaded without unpickling
    anything but tensors and plain data (see :func:`recbole_llm.compat.load_checkpoint`).

    Args:
        model_file (str): path of the ``.pth`` checkpoint.
        config_dict (dict): keys to override in the saved config, e.g. ``data_path`` (the
            dataset's own folder) when the data moved. Semantic files are loaded only if present
            and valid (``semantics_required: False``): models predict without them.
        trust_checkpoint (bool): only for files you made yourself: also load a checkpoint
            without a checksum file, or one that pickles objects (RecBole's own checkpoints
            and those of older recbole_llm versions pickle their Config); unpickling runs
            whatever code the file holds.

    Returns:
        tuple: ``(config, model, dataset, train_data, valid_data, test_data)``; the model is in
        eval mode (the trainer switches it back to training when it trains).
    """
    import torch

    compat.apply()
    checkpoint = compat.load_checkpoint(model_file, map_location="cpu", trust=trust_checkpoint)
    config = checkpoint["config"]
    if isinstance(config, dict):  # ours: plain data
        config = restore_config(config)
    # whether to trust files loaded later is the caller's choice, not the saving run's
    config["trust_checkpoint"] = bool(trust_checkpoint)
    # a checkpoint of a distributed run still holds its process-group settings
    for key, value in _SINGLE_PROCESS.items():
        config[key] = value
    for key in ("world_size", "nproc", "offset", "ip", "port"):
        config.final_config_dict.pop(key, None)
    if config["device"].type == "cuda" and not torch.cuda.is_available():
        config["device"] = torch.device("cpu")
    # inference needs no LLM semantics: use them if present and valid, never create them
    config["semantics_required"] = False
    for key, value in (config_dict or {}).items():
        config[key] = value

    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)

    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = build_model(config, train_data._dataset, checkpoint=True)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    return config, model, dataset, train_data, valid_data, test_data
