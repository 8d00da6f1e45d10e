"""The `mtl-tickets` command: parse, build a Config, call one library function, print a summary."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from .schema import ConfigError


def friendly_errors(fn):
    """User mistakes become one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .checkpoint import StorageError
        from .fresh_process import RunProcessDied
        from .train import NumericalError, TrainingInterrupted

        try:
            return fn(*args, **kwargs)
        except ConfigError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except (NumericalError, StorageError, RunProcessDied) as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(3)
        except TrainingInterrupted as err:
            click.echo(f"stopped: {err}; rerun the same command to resume", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Multi-task learning with shared super-ticket masks on BERT-family encoders.

    \b
    Example:
      mtl-tickets train --config configs/quickstart.yaml --glue-dir ../shared/data/glue
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")
    for noisy in ("transformers", "datasets", "urllib3", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def hush() -> None:
    """`--quiet`: the final table, warnings and errors only; no progress bars (ours or transformers'
    "Loading weights") and no line per evaluation."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.getLogger("mtl_tickets").setLevel(logging.WARNING)


def run_options(fn):
    """The flags shared by commands that build a run config; each overrides the config file."""
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML run config (configs/*.yaml)."),
        click.option("--task", "--tasks", "tasks", multiple=True, help="Task name or tag; repeat or comma-separate."),
        click.option("--model", help="Encoder: `minilm-l6` (bundled), a local folder, or a hub id."),
        click.option("--glue-dir", type=click.Path(file_okay=False), help="GLUE in its tsv layout (else $GLUE_DIR, else the hub)."),
        click.option("--epochs", type=float),
        click.option("--lr", type=float, help="Peak learning rate."),
        click.option("--batch-size", type=int),
        click.option("--seed", type=int),
        click.option("--max-seq-len", type=int),
        click.option("--max-train-examples", type=int, help="Fixed-seed subsample of each train set."),
        click.option("--max-eval-examples", type=int, help="Fixed-seed subsample of each dev set."),
        click.option("--output-dir", type=click.Path(file_okay=False), help="Run directory (resumes if it exists)."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Any setting, e.g. train.warmup=0.06."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


FLAG_KEYS = {
    "model": "model.name",
    "glue_dir": "data.glue_dir",
    "epochs": "train.epochs",
    "lr": "train.lr",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "max_seq_len": "data.max_seq_len",
    "max_train_examples": "data.max_train_examples",
    "max_eval_examples": "data.max_eval_examples",
    "output_dir": "output_dir",
}


def build_config(config_file: str | None, tasks: tuple[str, ...], overrides: tuple[str, ...], quiet: bool = False,
                 settings: dict[str, str | None] | None = None, **flags):
    """The config file, then `--set` overrides, then a command's own `settings` (key -> value, None: not
    given), then the shared flags; `--quiet` takes effect from here on."""
    from .config import load_config

    items = list(overrides) + [f"{key}={value}" for key, value in (settings or {}).items() if value is not None]
    if tasks:
        names = [n.strip() for t in tasks for n in t.split(",") if n.strip()]
        items.append(f"tasks={json.dumps(names)}")
    items += [f"{FLAG_KEYS[k]}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    cfg = load_config(config_file, items)
    if quiet:
        hush()
    return cfg


@main.command()
@run_options
@click.option("--quiet", is_flag=True, help="Print only the final table (and warnings).")
@friendly_errors
def train(config_file, tasks, overrides, quiet, **flags) -> None:
    """Fine-tune one shared encoder on one or several GLUE tasks.

    Evaluates every epoch, keeps the best checkpoint, and resumes a killed run when the same
    command is run again.

    \b
    Examples:
      mtl-tickets train --task rte --glue-dir ../shared/data/glue --output-dir runs/rte
      mtl-tickets train --config configs/quickstart.yaml --set train.lr=5e-5
    """
    from .train import format_results, train as run_training

    cfg = build_config(config_file, tasks, overrides, quiet, **flags)
    result = run_training(cfg, progress=not quiet)
    click.echo(format_results(result.results))
    click.echo(f"run directory: {result.output_dir}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--glue-dir", type=click.Path(file_okay=False), help="Override the run's GLUE directory.")
@click.option("--weights", type=click.Choice(["best", "last"]), default="best", show_default=True)
@friendly_errors
def evaluate(run_dir, glue_dir, weights) -> None:
    """Evaluate a finished run on every task's dev sets.

    \b
    Example:
      mtl-tickets evaluate runs/rte
    """
    from .inference import evaluate_run, format_evaluation

    click.echo(format_evaluation(evaluate_run(Path(run_dir), glue_dir, weights)))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Where to write <TASK>.tsv (default RUN_DIR/predictions).")
@click.option("--glue-dir", type=click.Path(file_okay=False), help="Override the run's GLUE directory.")
@friendly_errors
def predict(run_dir, out_dir, glue_dir) -> None:
    """Write GLUE test-set submission files (index<TAB>prediction) for a run's tasks.

    AX is predicted too when the run trained MNLI.

    \b
    Example:
      mtl-tickets predict runs/rte --out submission/
    """
    from .inference import predict_run

    for path in predict_run(Path(run_dir), Path(out_dir) if out_dir else None, glue_dir):
        click.echo(str(path))


@main.group()
def tickets() -> None:
    """Find, show, merge and import super tickets.

    \b
    Example:
      mtl-tickets tickets find --task rte --glue-dir ../shared/data/glue --output-dir runs/tickets
    """


@tickets.command("find")
@run_options
@click.option("--ffn-granularity", type=click.Choice(["neuron", "layer"]), help="Prune FFN neurons or whole FFN layers.")
@click.option("--sparsities", help="Comma-separated winning-ticket sparsities, e.g. 0.1,0.2,0.3.")
@click.option("--sparsity-mode", type=click.Choice(["units", "paired", "params"]),
              help="Fraction of units, the paper's heads+FFN-layer pairing, or fraction of parameters.")
@click.option("--quiet", is_flag=True, help="Print only the final table (and warnings).")
@friendly_errors
def tickets_find(config_file, tasks, overrides, ffn_granularity, sparsities, sparsity_mode, quiet, **flags) -> None:
    """Find each task's super ticket: fine-tune, score, prune, rewind, re-fine-tune, pick the best.

    The full model and the best winning ticket are then rerun with tickets.confirm_seeds (never
    train.seed, the grid's), and the printed line gives their paired difference with its 95 %
    interval: whether the ticket beats the full model against seed noise.

    Every (kind, sparsity, seed) cell is its own resumable run under OUTPUT_DIR/<task>/; rerun the
    same command to continue a killed sweep. Writes OUTPUT_DIR/tickets.json, <task>_curve.csv/.png
    and TensorBoard figures.

    \b
    Examples:
      mtl-tickets tickets find --task rte --glue-dir ../shared/data/glue --output-dir runs/tickets
      mtl-tickets tickets find --config configs/tickets_mini_glue.yaml --ffn-granularity layer --sparsity-mode paired
    """
    from .tickets import find_super_tickets, format_super_tickets

    settings = {"tickets.ffn_granularity": ffn_granularity, "tickets.sparsity_mode": sparsity_mode,
                "tickets.sparsities": f"[{sparsities}]" if sparsities else None}
    cfg = build_config(config_file, tasks, overrides, quiet, settings, **flags)
    click.echo(format_super_tickets(find_super_tickets(cfg, progress=not quiet)))
    click.echo(f"ticket set: {Path(cfg.output_dir) / 'tickets.json'}")


@tickets.command("show")
@click.argument("ticket_file", type=click.Path(dir_okay=False))
@friendly_errors
def tickets_show(ticket_file) -> None:
    """Print each ticket as a layer x head map with its FFN share and parameter count.

    \b
    Example:
      mtl-tickets tickets show runs/tickets/tickets.json
    """
    from .masks import TicketSet, format_ticket_set

    click.echo(format_ticket_set(TicketSet.load(Path(ticket_file))))


@tickets.command("merge")
@click.argument("ticket_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="Ticket file to write.")
@friendly_errors
def tickets_merge(ticket_files, out_file) -> None:
    """Merge ticket files of one encoder (e.g. one sweep per task) into one ticket set.

    \b
    Example:
      mtl-tickets tickets merge runs/phase_transition/*/tickets.json --out runs/super_tickets.json
    """
    from .masks import TicketSet, merge

    merged = merge([(Path(f), TicketSet.load(Path(f))) for f in ticket_files])
    merged.save(Path(out_file))
    click.echo(f"wrote {out_file}: tickets of {', '.join(merged.tickets)}")


@tickets.command("import")
@click.option("--heads", "heads_file", required=True, type=click.Path(dir_okay=False), help="Reference heads_to_mask.json.")
@click.option("--ffn", "ffn_file", type=click.Path(dir_okay=False), help="Reference ffn_to_mask.json.")
@click.option("--tasks", "task_names", required=True, help="Task names in the reference's task-index order, comma-separated.")
@click.option("--model", default="minilm-l6", show_default=True, help="The encoder the masks were made for.")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="Ticket file to write.")
@friendly_errors
def tickets_import(heads_file, ffn_file, task_names, model, out_file) -> None:
    """Convert the reference code's heads_to_mask.json / ffn_to_mask.json into a ticket file.

    \b
    Example:
      mtl-tickets tickets import --heads mask_14_heads/heads_to_mask.json --ffn mask_1_ffn/ffn_to_mask.json \\
        --tasks mnli,rte --model bert-base-uncased --out tickets.json
    """
    from .encoders import load_shape
    from .masks import import_reference

    shape = load_shape(model)
    names = [n.strip() for n in task_names.split(",") if n.strip()]
    import_reference(Path(heads_file), Path(ffn_file) if ffn_file else None, names, model, shape).save(Path(out_file))
    click.echo(f"wrote {out_file}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--task", required=True, help="The task whose ticket and head to export.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--tickets", "tickets_file", type=click.Path(dir_okay=False),
              help="Prune with this ticket file instead of the run's own (predictions then change).")
@friendly_errors
def export(run_dir, task, out_dir, tickets_file) -> None:
    """Export a task of a run as a physically pruned model (safetensors, config, tokenizer, ticket).

    Heads and FFN neurons the task's ticket removes are sliced out of the weights; load it back with
    `mtl_tickets.load_exported(OUT)`.

    \b
    Example:
      mtl-tickets export runs/tickets_share --task rte --out exported/rte
    """
    from .export import export_run, format_export, load_exported

    path = export_run(Path(run_dir), task, Path(out_dir), Path(tickets_file) if tickets_file else None)
    load_exported(path)  # fail here, not in the user's code, if the folder does not load back
    click.echo(format_export(path))


@main.command("compare")
@run_options
@click.option("--tickets", "tickets_file", type=click.Path(dir_okay=False), help="Super tickets (from tickets find).")
@click.option("--seeds", help="Comma-separated seeds, e.g. 1,2,3.")
@click.option("--quiet", is_flag=True, help="Print only the final table (and warnings).")
@friendly_errors
def compare_command(config_file, tasks, overrides, tickets_file, seeds, quiet, **flags) -> None:
    """Compare shared and task-specific tickets on the same data, seeds and budget.

    Trains (or reuses) single-task full models, single-task super tickets, joint full (MT-DNN),
    joint tickets (Tickets-Share) and joint adaptive, and prints the table twice: each task at its
    own best epoch (the paper's rule), and each joint run's one best checkpoint (what is deployed),
    each with every contender's paired difference to the first; writes OUTPUT_DIR/comparison.csv,
    comparison_paired.csv and comparison.md (`--set compare.table=NAME` names them NAME.*, so several
    comparisons can share one run directory and its runs). Tickets contenders never run on the tickets'
    selection seed.
    Adaptive sharing's controls are contenders too: joint_adaptive_no_borrow, joint_learned_fixed
    (learn, then retrain with the learned tickets fixed) and joint_random_swaps (as many swaps as the
    learned run, at random).

    \b
    Examples:
      mtl-tickets compare --config configs/compare_mini_glue.yaml --tickets runs/tickets/tickets.json
      mtl-tickets compare --config configs/compare_mini_glue.yaml --tickets runs/tickets/tickets.json \\
        --set "compare.contenders=[joint_tickets, joint_adaptive, joint_learned_fixed, joint_random_swaps]"
    """
    from .compare import compare

    settings = {"tickets_file": json.dumps(tickets_file) if tickets_file else None, "compare.seeds": f"[{seeds}]" if seeds else None}
    cfg = build_config(config_file, tasks, overrides, quiet, settings, **flags)
    compare(cfg, progress=not quiet)
    click.echo((Path(cfg.output_dir) / f"{cfg.compare.table}.md").read_text())


@main.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--logdir", type=click.Path(file_okay=False), help="Write TensorBoard views here (default: none).")
@friendly_errors
def overlap(source, logdir) -> None:
    """Task x task overlap of tickets: Jaccard and shared units, heads and FFN separately.

    SOURCE is a ticket file, or a run directory (its learned_tickets.json, else its tickets.json).
    Also prints, per layer, how many tasks keep each head.

    \b
    Examples:
      mtl-tickets overlap runs/tickets/tickets.json --logdir runs/tickets/overlap
      mtl-tickets overlap runs/adaptive && tensorboard --logdir runs/adaptive
    """
    from .masks import TicketSet, format_overlap, overlap as measure

    path = Path(source)
    if path.is_dir():
        found = [p for p in (path / "learned_tickets.json", path / "tickets.json") if p.is_file()]
        if not found:
            raise ConfigError(f"{path} has no learned_tickets.json or tickets.json; give a ticket file or a ticket run")
        path = found[0]
    ticket_set = TicketSet.load(path)
    click.echo(f"tickets: {path} ({len(ticket_set.tickets)} tasks)")
    click.echo(format_overlap(measure(ticket_set.tickets)))
    if logdir:
        from .board import write_overlap_board

        write_overlap_board(Path(logdir), ticket_set.tickets)
        click.echo(f"TensorBoard: tensorboard --logdir {logdir}")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a setting of every run config.")
def validate(files, overrides) -> None:
    """Check run configs and task files without loading data or a model, one line per file.

    A run config gets the checks every recipe runs first (keys, types, ranges, tasks, sampler,
    ticket file), and one with a tickets or compare section that recipe's own (no confirmation on
    the selection seed); a file in a tasks folder (tasks/, $MTL_TICKETS_TASKS) is read as task
    declarations. Exits 2 if any file fails.

    \b
    Example:
      mtl-tickets validate configs/*.yaml tasks/*.yaml
    """
    from .validation import validate_file

    failed = False
    for file in files:
        try:
            click.echo(f"{file}: OK ({validate_file(Path(file), list(overrides))})")
        except ConfigError as err:
            click.echo(f"error: {err}", err=True)
            failed = True
    if failed:
        sys.exit(2)


@main.command()
@click.option("--tag", help="Only tasks with this tag.")
def tasks(tag: str | None) -> None:
    """List the registered tasks (tasks/*.yaml and Python plug-ins).

    \b
    Example:
      mtl-tickets tasks --tag glue
    """
    from .registry import all_tasks, format_tasks

    try:
        specs = all_tasks().values()
    except ConfigError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    click.echo(format_tasks([s for s in specs if not tag or tag in s.tags]))


if __name__ == "__main__":
    main()
