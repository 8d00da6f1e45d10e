"""Settings that cannot run fail first: in every recipe, before any data or model is loaded, in one
line; `mtl-tickets validate` runs the same checks on config and task files."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtl_tickets import data, encoders
from mtl_tickets.compare import compare
from mtl_tickets.config import load_config
from mtl_tickets.gates import EncoderShape
from mtl_tickets.masks import Ticket, TicketSet
from mtl_tickets.schema import ConfigError
from mtl_tickets.tickets import find_super_tickets
from mtl_tickets.train import train
from mtl_tickets.validation import validate

from .test_cli import cli

ROOT = Path(__file__).resolve().parents[1]
SHAPE = EncoderShape(layers=2, heads=4, ffn=5, hidden=8)
RECIPES = {"train": train, "tickets find": find_super_tickets, "compare": compare}


def ticket_file(folder: Path, damage=None) -> Path:
    """A valid ticket file for rte on a tiny shape, or that file's JSON after `damage(data)` edits it."""
    ticket = Ticket(np.array([[1, 0, 1, 1], [1, 1, 1, 0]], bool), np.ones((2, 5), bool), {"kind": "winning", "sparsity": 0.2, "seed": 1})
    path = folder / "tickets.json"
    TicketSet("tiny", SHAPE, {"rte": ticket}).save(path)
    if damage is not None:
        content = json.loads(path.read_text())
        damage(content)
        path.write_text(json.dumps(content))
    return path


DAMAGES = {  # what a hand-edited or foreign ticket file gets wrong -> what the error says
    "wrong field type": (lambda d: d["tickets"]["rte"].update(sparsity="low"), r"tickets.rte.sparsity: expected float, got 'low'"),
    "unit of the wrong type": (lambda d: d["tickets"]["rte"]["attn_heads"]["1"].append(1.5), r"attn_heads.1\[3\]: expected int, got 1.5"),
    "unknown key in a ticket": (lambda d: d["tickets"]["rte"].update(heads=[0]), "tickets.rte: unknown key 'heads'"),
    "unknown top-level key": (lambda d: d.update(ticket={}), r"tickets.json: unknown key 'ticket' \(did you mean 'tickets'"),
    "unknown encoder key": (lambda d: d["encoder"].update(layer=2), r"encoder: unknown key 'layer' \(did you mean 'layers'"),
    "missing key": (lambda d: d.pop("ffn_granularity"), "missing key 'ffn_granularity'"),
    "head out of range": (lambda d: d["tickets"]["rte"]["attn_heads"]["1"].append(4), r"attn_heads\[1\]: index 4 is out of range \[0, 4\)"),
    "layer out of range": (lambda d: d["tickets"]["rte"]["ffn"].update({"2": [0]}), r"ffn: layer '2' is out of range \[0, 2\)"),
    "neuron out of range": (lambda d: d["tickets"]["rte"]["ffn"]["0"].append(5), r"ffn\[0\]: index 5 is out of range \[0, 5\)"),
    "ffn of the other granularity": (lambda d: d["tickets"]["rte"].update(ffn=[0, 1]), "'neuron' lists kept neurons per layer"),
    "shape not positive": (lambda d: d["encoder"].update(heads=0), "must be positive"),
    "not a ticket file": (lambda d: d.update(format="something-else"), "not an mtl-tickets ticket file"),
}


@pytest.mark.parametrize("case", DAMAGES)
def test_malformed_ticket_files_are_refused_naming_the_place(tmp_path, case):
    damage, message = DAMAGES[case]
    path = ticket_file(tmp_path, damage)
    with pytest.raises(ConfigError, match=message) as err:
        TicketSet.load(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_a_ticket_file_keeps_only_what_it_can_read_back(tmp_path):
    """Saving goes through the same schema as loading: an unknown kind of provenance fails at once."""
    ticket = Ticket(np.ones((2, 4), bool), np.ones(2, bool), {"colour": "red"})
    with pytest.raises(TypeError, match="colour"):
        TicketSet("tiny", SHAPE, {"rte": ticket}).save(tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()


# A bad setting -> a piece of its one-line error. Each is checked before any data or model is loaded.
BAD_SETTINGS = {
    "unknown sampler": (["train.sampler=temprature"], "train.sampler: unknown sampler 'temprature' (did you mean 'temperature'?)"),
    "unknown sampler option": (["train.sampler=temperature", "train.sampler_options={temprature: 2}"],
                               "sampler 'temperature' has no option 'temprature' (did you mean 'temperature'?)"),
    "option of a sampler without options": (["train.sampler=uniform", "train.sampler_options={temperature: 2}"],
                                            "sampler 'uniform' has no option 'temperature'; it takes none"),
    "sampler option out of range": (["train.sampler=temperature", "train.sampler_options={temperature: 0}"],
                                    "sampler 'temperature': temperature must be > 0, got 0.0"),
    "sampler option of the wrong type": (["train.sampler=dynamic", "train.sampler_options={smoothing: high}"],
                                         "train.sampler_options.smoothing: expected float, got 'high'"),
    "dynamic smoothing out of range": (["train.sampler=dynamic", "train.sampler_options={smoothing: 1.5}"],
                                       "smoothing must be in [0, 1), got 1.5"),
    "cap of an unknown task": (["data.max_train_examples_per_task={colaa: 100}"],
                               "data.max_train_examples_per_task: unknown task 'colaa' (did you mean 'cola'?)"),
    "heldout selection without a holdout": (["tickets.select_on=heldout"], "tickets.select_on: heldout needs data.holdout > 0"),
    "confirm_seeds not a list": (["tickets.confirm_seeds=3"], "tickets.confirm_seeds: expected a list, got 3"),
    "confirm_seeds not integers": (["tickets.confirm_seeds=[1, 2.5]"], "tickets.confirm_seeds[1]: expected int, got 2.5"),
    "confirm_seeds repeated": (["tickets.confirm_seeds=[1, 2, 1]"], "confirm_seeds repeats a seed: [1, 2, 1]"),
    "only prediction-only tasks": (["tasks=[ax]"], "none of them can be trained"),
    "missing ticket file": (["sharing=tickets", "tickets_file={tmp}/none.json"], "tickets_file {tmp}/none.json does not exist"),
    "ticket file that is not JSON": (["sharing=tickets", "tickets_file={tmp}/config.yaml"], "not a readable ticket file"),
    "ticket file without the run's task": (["tasks=[mrpc]", "sharing=adaptive", "tickets_file={tickets}"],
                                           "has no ticket for mrpc (it has rte)"),
    "malformed ticket file": (["sharing=tickets", "tickets_file={damaged}"], r"unknown key 'heads'"),
}


# Settings only one recipe refuses: the seed a super ticket is selected on (train.seed in `tickets find`,
# the ticket's `seed` in `compare`) is never one it is confirmed or compared on. Case -> recipe, overrides, message.
SELECTION_SEED = {
    "tickets find confirming on the grid's seed": ("tickets find", ["train.seed=2", "tickets.confirm_seeds=[1, 2, 3]"],
                                                   "tickets.confirm_seeds [1, 2, 3] contain train.seed 2, the seed the grid and "
                                                   "the super ticket are chosen on; confirm on other seeds, e.g. "
                                                   "tickets.confirm_seeds=[1, 3, 4]"),
    "compare on the tickets' selection seed": ("compare", ["tickets_file={tickets}", "compare.seeds=[1, 2]",
                                                           "compare.contenders=[single_full, joint_adaptive]"],
                                               "compare.seeds [1, 2] include seeds the super tickets were selected on "
                                               "(rte: 1; tickets_file {tickets}); compare on other seeds, e.g. compare.seeds=[2, 3]"),
}


def bad_settings(case: str, tmp_path: Path) -> tuple[list[str], str]:
    """The overrides and expected message of a case, with its files in `tmp_path`."""
    (tmp_path / "config.yaml").write_text("tasks: [rte]\n")
    (tmp_path / "damaged").mkdir(exist_ok=True)
    paths = {"tmp": tmp_path, "tickets": ticket_file(tmp_path),
             "damaged": ticket_file(tmp_path / "damaged", DAMAGES["unknown key in a ticket"][0])}
    overrides, message = BAD_SETTINGS[case] if case in BAD_SETTINGS else SELECTION_SEED[case][1:]
    for name, path in paths.items():
        overrides, message = [o.replace(f"{{{name}}}", str(path)) for o in overrides], message.replace(f"{{{name}}}", str(path))
    return overrides, message


@pytest.fixture
def nothing_loads(monkeypatch):
    """Loading an encoder, a tokenizer, an encoder config or a task's data fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("data or a model was loaded before the settings were validated")

    monkeypatch.setattr(encoders, "_load", refuse)
    monkeypatch.setattr(data, "load_encoded", refuse)


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("case", BAD_SETTINGS)
def test_every_recipe_refuses_a_bad_setting_before_loading_anything(tmp_path, nothing_loads, case, recipe):
    overrides, message = bad_settings(case, tmp_path)
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        RECIPES[recipe](load_config(tmp_path / "config.yaml", [f"output_dir={out}", *overrides]), progress=False)
    assert message in str(err.value), str(err.value)
    assert "\n" not in str(err.value)
    assert not out.exists()  # not even a run directory


@pytest.mark.parametrize("case", SELECTION_SEED)
def test_the_recipe_that_selects_on_a_seed_refuses_to_confirm_on_it_before_loading_anything(tmp_path, nothing_loads, case):
    recipe = SELECTION_SEED[case][0]
    overrides, message = bad_settings(case, tmp_path)
    out = tmp_path / "run"
    cfg = load_config(tmp_path / "config.yaml", [f"output_dir={out}", *overrides])
    with pytest.raises(ConfigError) as err:
        RECIPES[recipe](cfg, progress=False)
    assert str(err.value) == message and not out.exists()
    validate(cfg)  # a training run with the same settings confirms and compares nothing: nothing to refuse


def test_compare_refuses_the_selection_seed_only_where_a_contender_trains_through_the_tickets(tmp_path):
    overrides, _ = bad_settings("compare on the tickets' selection seed", tmp_path)
    validate(load_config(None, [*overrides, "compare.contenders=[single_full, joint_full]"]), "compare")
    for contender in ("single_tickets", "joint_tickets", "joint_adaptive"):
        with pytest.raises(ConfigError, match="include seeds the super tickets were selected on"):
            validate(load_config(None, [*overrides, f"compare.contenders=[{contender}]"]), "compare")


def test_the_defaults_confirm_and_compare_on_seeds_the_selection_did_not_use():
    cfg = load_config(None)
    assert cfg.train.seed not in cfg.tickets.confirm_seeds and cfg.tickets.confirm_seeds == cfg.compare.seeds
    validate(cfg, "tickets")


def test_the_validate_command_gives_one_line_per_bad_file_and_exit_2(tmp_path):
    files, messages = [], []
    for i, case in enumerate([*BAD_SETTINGS, *SELECTION_SEED]):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        overrides, message = bad_settings(case, folder)
        files.append(folder / "bad.yaml")
        files[-1].write_text(as_yaml(overrides))
        messages.append(message)
    (tmp_path / "tasks").mkdir()
    files.append(tmp_path / "tasks" / "mine.yaml")  # a tasks folder holds task declarations
    files[-1].write_text("mytask:\n  labels: [a, b]\n  metric: [accuracy]\n  tsv: {dir: X, text: [s]}\n")
    messages.append("mytask: unknown key 'metric' (did you mean 'metrics'?)")
    result = cli("validate", *files)
    assert result.returncode == 2 and result.stdout == ""
    errors = result.stderr.splitlines()
    assert len(errors) == len(files), result.stderr
    for line, path, message in zip(errors, files, messages, strict=True):
        assert line.startswith(f"error: {path}: ") and message in line, line


def as_yaml(overrides: list[str]) -> str:
    """A config file holding `tasks: [rte]` and the dotted overrides."""
    doc: dict = {"tasks": ["rte"]}
    for item in overrides:
        key, _, raw = item.partition("=")
        *sections, last = key.split(".")
        node = doc
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = yaml.safe_load(raw)
    return yaml.safe_dump(doc)


def test_the_validate_command_checks_a_config_as_the_recipes_whose_section_it_sets(tmp_path):
    """Seed 3 is a default confirm seed: only a `tickets find` config (one with a tickets section, in the
    file or an override) is refused for it."""
    (tmp_path / "train.yaml").write_text("tasks: [rte]\ntrain: {seed: 3}\n")
    (tmp_path / "tickets.yaml").write_text("tasks: [rte]\ntrain: {seed: 3}\ntickets: {kinds: [winning]}\n")
    result = cli("validate", tmp_path / "train.yaml", tmp_path / "tickets.yaml")
    assert result.returncode == 2 and result.stdout.startswith(f"{tmp_path / 'train.yaml'}: OK")
    refused = f"error: {tmp_path / 'tickets.yaml'}: tickets.confirm_seeds [2, 3, 4, 5, 6] contain train.seed 3"
    assert result.stderr.strip().startswith(refused)
    overridden = cli("validate", tmp_path / "train.yaml", "--set", "tickets.select_on=dev")
    assert overridden.returncode == 2 and "contain train.seed 3" in overridden.stderr


def test_every_config_and_task_file_validates_from_the_command_line():
    files = sorted(p.relative_to(ROOT) for folder in ("configs", "tasks") for p in (ROOT / folder).glob("*.yaml"))
    result = cli("validate", *files, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [line for line in result.stdout.splitlines() if ": OK (" in line]
    assert [line.split(": OK")[0] for line in result.stdout.splitlines()] == [str(p) for p in files]
    assert "10 tasks" in result.stdout  # tasks/glue.yaml went through the registry's checker


def test_a_train_command_with_a_bad_setting_exits_2_with_one_line(tmp_path):
    result = cli("train", "--task", "rte", "--output-dir", tmp_path / "run", "--set", "train.sampler=round-robin")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: train.sampler: unknown sampler 'round-robin' (did you mean 'round_robin'?)"
    assert not (tmp_path / "run").exists()


def test_empty_confirm_seeds_mean_no_reruns_and_are_valid(tmp_path):
    cfg = load_config(None, ["tickets.confirm_seeds=[]", f"output_dir={tmp_path}"])
    validate(cfg)
    assert cfg.tickets.confirm_seeds == []
