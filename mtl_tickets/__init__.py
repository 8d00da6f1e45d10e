"""Multi-task learning with shared super-ticket masks on BERT-family encoders (Liang et al., ACL 2021).

The public API: what the `mtl-tickets` command does, as functions.

    import mtl_tickets as mt

    cfg = mt.load_config("configs/quickstart.yaml", ["data.glue_dir=../shared/data/glue"])
    run = mt.train_model(cfg)                       # a run directory with results.json
    print(mt.format_results(run.results))
    print(mt.format_evaluation(mt.evaluate_run(run.output_dir)))

Names load on first use (PEP 562), so `import mtl_tickets` stays light: no torch until a function
that needs it is called. The recipes live in modules named `train`, `compare` and `export`; their
functions go by `train_model`, `compare_contenders` and `export_run` here, because a package
attribute named like a submodule is replaced by that submodule once it is imported.
"""

from __future__ import annotations

import importlib
from importlib import metadata

from . import kernel_cache

kernel_cache.enlarge()  # before torch builds its first oneDNN kernel (kernel_cache.py)

try:
    __version__ = metadata.version("mtl-tickets")
except metadata.PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0+unknown"

# public name -> (module, name in it)
_EXPORTS = {
    # settings
    "Config": ("config", "Config"),
    "load_config": ("config", "load_config"),
    "ConfigError": ("schema", "ConfigError"),
    # the recipes: train, find super tickets, compare contenders
    "train_model": ("train", "train"),
    "RunResult": ("train", "RunResult"),
    "format_results": ("train", "format_results"),
    "find_super_tickets": ("tickets", "find_super_tickets"),
    "format_super_tickets": ("tickets", "format_super_tickets"),
    "compare_contenders": ("compare", "compare"),
    "ComparisonRow": ("compare", "Row"),
    "PairedDifference": ("stats", "PairedDifference"),
    # finished runs: evaluate, predict, export
    "load_run": ("inference", "load_run"),
    "evaluate_run": ("inference", "evaluate_run"),
    "format_evaluation": ("inference", "format_evaluation"),
    "predict_run": ("inference", "predict_run"),
    "export_run": ("export", "export_run"),
    "load_exported": ("export", "load_exported"),
    # tickets and their overlap
    "Ticket": ("masks", "Ticket"),
    "TicketSet": ("masks", "TicketSet"),
    "overlap": ("masks", "overlap"),
    "format_overlap": ("masks", "format_overlap"),
    # the task registry
    "TaskSpec": ("registry", "TaskSpec"),
    "all_tasks": ("registry", "all_tasks"),
    "register_task": ("registry", "register_task"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
