"""The run's life: its folder (created, never overwritten by accident, finalized), the checkpoints
(checkpointer), a resume (resume), stop requests (signals.StopFlag) and torchrun, put together in
`train`. The CLI and Python callers share it:

    import torchlogreg as tl
    tl.train(tl.preset("default"), out="runs/x", checkpoint_every=500)   # Ctrl-C: a checkpoint
    tl.train(out="runs/x", resume=True)                                  # goes on exactly

Under torchrun (WORLD_SIZE > 1) `train` joins the process group itself; rank 0 writes the folder.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from pathlib import Path

from ..base.config import TrainConfig
from ..base.devices import cpu_threads, resolve_device, threads_for
from ..base.exceptions import CheckpointError, ConfigError, DivergenceError, Interrupted
from ..base.signals import StopFlag
from ..base.storage import atomic_write_bytes, make_folder, output_lock
from ..data.inmemory import Data, check_dataset, dataset_location, load_data
from ..runfolder.checkpoints import save_run
from ..runfolder.layout import check_run_target, checkpoint_diverged, is_run_folder, is_sweep_folder
from ..runfolder.resumable import has_training_state, read_training_meta, remove_training_state
from .checkpointer import Checkpointer, space_for_run
from .distributed import DistContext, broadcast_object, init_from_environment, shutdown
from .resume import resumed_config, same_data
from .trainer import Training, TrainResult, build, finish


def default_out(parent: str = "runs") -> Path:
    """parent/<timestamp>, with a suffix when that exists already."""
    out = Path(parent) / datetime.now().strftime("%Y%m%d-%H%M%S")
    suffix = 1
    while out.exists():
        out = out.with_name(f"{out.name.split('_')[0]}_{suffix}")
        suffix += 1
    return out


def check_writable(folder: Path) -> None:
    """Create `folder` and prove it takes files, before any work that would be lost otherwise."""
    make_folder(folder)
    atomic_write_bytes(folder / ".write-test", b"")
    (folder / ".write-test").unlink()


def _prepare_folder(out: Path, overwrite: bool, main_rank: bool) -> None:
    """`out` ready for a fresh run: holding none (unless `overwrite`), writable. What it holds stays
    until the new run first writes there (Checkpointer.claim)."""
    try:
        check_run_target(out, overwrite)
    except ConfigError as error:
        resumable = has_training_state(out) and not checkpoint_diverged(out)  # (a resume would diverge again)
        if resumable and not is_sweep_folder(out):  # (a run is never written among a sweep's files)
            error.resume_dir = out
        raise
    if main_rank:
        check_writable(out)


def describe(training: Training) -> str:
    """One line: the data, the task, the optimizer and the budget (and where a resume starts)."""
    config, data, engine = training.config, training.data, training.engine
    val = len(data.val) if data.val is not None else 0
    unit = "iterations" if config.optimizer == "lbfgs" else "epochs"
    budget = f"{config.iters} iterations" if config.iters else f"{config.epochs} {unit}"
    budget = f"at most {budget}" + (f", tol {config.tol:g}" if config.tol else "")
    batch = "full batch" if config.optimizer == "lbfgs" else f"batch {config.batch_size}"
    ranks = f" on {training.dist.world_size} processes" if training.dist else ""
    task = f" (binary: {data.class_names[1]} against {data.class_names[0]})" if data.binary else ""
    line = (
        f"training {config.dataset}: {len(data.train)} train / {val} val / {len(data.test)} test, "
        f"{data.n_classes} classes{task}; {config.optimizer} "
        f"lr {config.lr:g}, {batch}, weight decay {config.weight_decay:.3g}, {budget}{ranks}"
    )
    if engine.iteration:
        line += f"\nresuming at iteration {engine.iteration} of {engine.total}"
    return line


def _join(config: TrainConfig, timeout: float) -> tuple[TrainConfig, DistContext | None]:
    dist = init_from_environment(resolve_device(config.device).type, timeout)
    if dist is not None and config.device.startswith("cuda"):
        config = config.replace(device=f"cuda:{dist.local_rank}")  # one GPU per process
    return config, dist


def _restore(training: Training, state: tuple, out: Path) -> None:
    """Continue from the checkpoint in `out`; a checkpoint that does not fit is one clear error."""
    try:
        training.engine.load_state_dict(*state)
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{out}: the checkpoint does not fit this run ({first_line[:300]})") from None


def _run(training: Training, checkpointer: Checkpointer) -> None:
    """engine.run(); on divergence keep the last good state (a stop request: `_interrupted`)."""
    engine, out = training.engine, checkpointer.out
    if out is not None and checkpointer.main_rank:
        checkpointer.last_good = engine.state_dict()  # the start, until an evaluation passes
    rows = len(training.data.train) if engine.full_batch else training.config.batch_size
    model = engine.model
    threads = threads_for(rows, model.n_features, model.linear.out_features, engine.parameters[0].device)
    try:
        with cpu_threads(threads):
            engine.run()
    except DivergenceError as error:
        training.bar.close()
        good = checkpointer.last_good
        if out is not None and checkpointer.replaces and is_run_folder(out):  # a run nothing can use ...
            error.args = (f"{error}; {out} keeps the run it held",)  # ... replaces none that works
        elif out is not None and good is not None and good[1]["iteration"] > 0:  # (the start keeps nothing)
            checkpointer.write(engine, (good[0], {**good[1], "diverged": True}))  # load_run tells it so
            iteration = good[1]["iteration"]
            error.args = (
                f"{error} and train again with out=ANOTHER_FOLDER (resume=True would repeat these settings); "
                f"kept the last good checkpoint (iteration {iteration}) in {out}",
            )
        raise
    training.bar.close()


def _interrupted(training: Training, checkpointer: Checkpointer) -> None:
    """A stopped run's checkpoint, then Interrupted; written once the disk held for the finished run
    is given back (on a nearly full disk the checkpoint had not fitted beside it)."""
    engine, out = training.engine, checkpointer.out
    checkpointer.write(engine)
    where = f"; saved a checkpoint in {out}" if out else ""
    raise Interrupted(
        f"interrupted at iteration {engine.iteration} of {engine.total}{where}",
        iteration=engine.iteration,
        resume_dir=out,
        signum=getattr(engine.should_stop, "signum", None),
    )


def _say_what_is_kept(stop: KeyboardInterrupt, training: Training, checkpointer: Checkpointer) -> None:
    """A run stopped at once (a KeyboardInterrupt: a second Ctrl-C, a notebook's stop) says, in a note
    on it, what its folder keeps: the last checkpoint written whole (every write is atomic), or none.
    `stop.kept` holds the words and `stop.resume_dir` the folder to resume, for the CLI's line."""
    engine, out = training.engine, checkpointer.out
    iteration = None
    if out is not None and checkpointer.main_rank:
        with contextlib.suppress(CheckpointError, OSError):  # (the interruption stays what is raised)
            iteration = read_training_meta(out)["iteration"] if has_training_state(out) else None
    stop.resume_dir = out if iteration is not None else None
    if iteration is not None:
        kept = f"{out} keeps the checkpoint of iteration {iteration}"
    else:
        kept = "no checkpoint was written" + (f" in {out}" if out is not None else "")
        kept += "" if checkpointer.every else " (checkpoint_every=N writes one as it trains)"
    stop.kept = f"at iteration {engine.iteration} of {engine.total}; {kept}"
    resumes = "; resume=True continues it" if iteration is not None else ""
    stop.add_note(f"torchlogreg: interrupted {stop.kept}{resumes}")


def train(
    config: TrainConfig | None = None,
    data: Data | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    checkpoint_every: int | None = None,
    verbose: bool = True,
    progress: bool | None = None,
    should_stop=None,
    handle_signals: bool = False,
    command: list[str] | None = None,
    dist_timeout: float = 60.0,
    announce=None,
    tensorboard: str | os.PathLike | None = None,
    download: bool = True,
) -> TrainResult:
    """Train as `config` says, on `data` (else loaded), and with `out` save the run there.

    The same run as ``torchlogreg train``: under torchrun each process calls this, and rank 0 alone
    prints and writes.

    Parameters
    ----------
    config : TrainConfig, optional
        What to train (default: the ``default`` preset). With ``resume`` it may change only the
        device, the data root and the dataset (to where the same data is now: the checkpoint's
        fingerprint of its data must match).
    data : Data, optional
        Data already loaded with :func:`load_data` for this config; reuse it across runs.
    out : str or path, optional
        A run folder to write (weights, ``model.json``, metrics, history): new, or a folder that holds
        no run (unless ``overwrite``) and is not a sweep's; other files in it stay.
    resume : bool, default=False
        Continue the interrupted run in `out` with its own settings, exactly where it stopped.
    overwrite : bool, default=False
        Replace a run (or checkpoint) already in `out`: removed just before the new run first writes
        there (a checkpoint or the run), so a run refused, failing or diverging leaves it whole;
        interrupted, the folder then holds the new run's checkpoint alone.
    checkpoint_every : int, optional
        Also write a resumable checkpoint every N steps (a resumed run keeps the interrupted one's
        unless given).
    verbose : bool, default=True
        Print a line per check (`torchlogreg train` adds the summary; ``result.metrics`` holds it).
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).
    should_stop : callable, optional
        Polled before every step, or after every call of the fused kernel's steps (up to 16,384
        rows' worth of steps); when it returns True the run stops after that step or call,
        checkpoints and raises :class:`Interrupted`.
    handle_signals : bool, default=False
        Treat SIGINT and SIGTERM as a stop request (the CLI does).
    command : list of str, optional
        The command line to record in ``model.json``.
    dist_timeout : float, default=60.0
        Seconds to wait for other processes under torchrun before failing.
    announce : callable, optional
        Gets a line describing the run before it starts (e.g. ``print``).
    tensorboard : str or path, optional
        A folder to log the curves and the weight templates to (needs the ``tensorboard`` extra).
    download : bool, default=True
        Download a missing built-in dataset; with False it is a :class:`DataError` (``--no-download``).

    Returns
    -------
    TrainResult
        The model (on the training device), its per-iteration history and its metrics.

    Raises
    ------
    ConfigError, DataError, CheckpointError
        For bad settings, data or run folders, before training starts.
    DivergenceError
        When the loss becomes NaN/inf or explodes (lower the learning rate), or L-BFGS's first step
        finds no lower objective at an lr below the default (raise it).
    Interrupted
        After a stop request, once the checkpoint is written.

    Examples
    --------
    >>> import torchlogreg as tl
    >>> config = tl.preset("default")
    >>> result = tl.train(config, verbose=False)  # doctest: +SKIP
    >>> result.metrics["test"]["accuracy"]  # doctest: +SKIP
    0.926
    >>> tl.train(config, out="runs/first", checkpoint_every=500)  # doctest: +SKIP
    >>> tl.train(out="runs/first", resume=True)  # after an interruption  # doctest: +SKIP
    """
    with contextlib.ExitStack() as cleanup:  # undone in reverse: logger, signals, processes, folder lock
        if resume and out is not None and int(os.environ.get("RANK", "0")) == 0:
            cleanup.enter_context(output_lock(out))  # before its checkpoint is read, not after
        config, state = _settings(config, data, out, resume, checkpoint_every)
        if state is not None and checkpoint_every is None:  # a resumed run checkpoints as it did
            checkpoint_every = state[1].get("checkpoint_every")
        config, dist = _join(config, dist_timeout)
        main_rank = dist is None or dist.is_main
        cleanup.callback(shutdown, dist)
        out = _claim_folder(out, dist, main_rank, cleanup, fresh=state is None, overwrite=overwrite)
        if state is not None and data is None:  # (the run's own folder gone: it says it moved)
            check_dataset(config.dataset, of_run=config.dataset == state[1]["config"].get("dataset"))
        data = data if data is not None else load_data(config, download=download)
        if handle_signals:
            should_stop = cleanup.enter_context(StopFlag())
        logger = _tensorboard_logger(tensorboard, data) if main_rank else None
        if logger is not None:
            cleanup.callback(logger.close)
        checkpointer = Checkpointer(out, checkpoint_every, main_rank, config, replaces=state is None)
        if out is not None:
            checkpointer.data = same_data(data, state)
        callbacks = [checkpointer] + ([logger] if logger else [])
        training = build(
            config, data, dist=dist, verbose=verbose and main_rank, progress=progress, callbacks=callbacks
        )
        training.engine.should_stop = should_stop
        if state is not None:
            _restore(training, state, out)
        if announce is not None and main_rank:
            announce(describe(training))
        try:
            with space_for_run(out, training, main_rank):
                _run(training, checkpointer)
                result = None if training.engine.stop_reason == "interrupted" else finish(training)
            if result is None:
                _interrupted(training, checkpointer)
        except KeyboardInterrupt as stop:  # at once (a second Ctrl-C, a notebook's stop), while training
            _say_what_is_kept(stop, training, checkpointer)
            raise
        if out is not None and main_rank:
            checkpointer.claim()
            save_run(result, out, overwrite=True, command=command)  # the folder was checked before
            remove_training_state(out)
        if logger is not None:
            logger.add_weights(result.model, data.image_shape)
        return result


def _claim_folder(
    out,
    dist: DistContext | None,
    main_rank: bool,
    cleanup: contextlib.ExitStack,
    *,
    fresh: bool,
    overwrite: bool,
) -> Path | None:
    """The run folder as every process names it; for a `fresh` run locked by the main one until
    `cleanup` (a second `train` into it is refused) and checked (what it holds is removed at the new
    run's first write, by Checkpointer.claim); None without `out`. A folder made here and still empty
    at `cleanup` (the data could not be read, say) is removed: a failed start leaves nothing behind."""
    if out is None:
        return None
    out = Path(broadcast_object(str(out), dist))
    if fresh:
        if main_rank:  # a resume's folder was locked before its checkpoint was read
            if not out.exists():
                cleanup.callback(_remove_if_empty, out)  # (runs after the lock below is let go)
            cleanup.enter_context(output_lock(out))
        _prepare_folder(out, overwrite, main_rank)
    return out


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (the run was written), or gone already
        folder.rmdir()


def _tensorboard_logger(folder, data: Data):
    """The TensorBoard callback for `folder` (None when off: nothing of tensorboard is imported)."""
    if folder is None:
        return None
    from .tensorboard import TensorBoardLogger

    return TensorBoardLogger(folder, image_shape=data.image_shape, class_names=data.class_names)


def _settings(
    config: TrainConfig | None, data: Data | None, out, resume: bool, checkpoint_every: int | None
) -> tuple[TrainConfig, tuple | None]:
    """The config to train with, and the state to resume from (None for a fresh run); the other
    arguments checked before any work."""
    if data is not None and not isinstance(data, Data):
        raise ConfigError(
            f"data must be a Data from torchlogreg.load_data(config), got {ascii(data)[:60]}",
            parameter="data",
        )
    if checkpoint_every is not None and not (type(checkpoint_every) is int and checkpoint_every >= 1):
        raise ConfigError(
            f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}",
            parameter="checkpoint_every",
        )
    if resume:
        if out is None:
            raise ConfigError("resume needs out: the folder of the interrupted run", parameter="resume")
        return resumed_config(Path(out), config)
    if not isinstance(config, TrainConfig):
        raise ConfigError(
            f"train needs a TrainConfig (torchlogreg.preset(...)), or resume=True with out; got {config!r}"
        )
    return config.replace(dataset=dataset_location(config.dataset)), None  # found from any directory
