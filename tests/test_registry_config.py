"""Every tasks/ and configs/ file validates; bad keys, types and YAML tags fail with clear errors."""

from pathlib import Path

import pytest

from mtl_tickets import registry
from mtl_tickets.config import Config, load_config
from mtl_tickets.data import find_split_file
from mtl_tickets.registry import TaskSpec, TsvSource, register_task
from mtl_tickets.schema import ConfigError

ROOT = Path(__file__).resolve().parents[1]
GLUE_TASKS = {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "ax"}


def test_every_glue_task_is_registered():
    tasks = registry.all_tasks()
    assert GLUE_TASKS <= set(tasks)
    assert tasks["mnli"].tsv.dev == ["dev_matched", "dev_mismatched"]
    assert tasks["stsb"].kind == "regression" and tasks["stsb"].num_outputs == 1
    assert tasks["ax"].predict_with == "mnli" and not tasks["ax"].trainable


def test_glue_tag_resolves_to_the_trainable_tasks():
    names = {t.name for t in registry.resolve(["glue"])}
    assert names == GLUE_TASKS - {"ax"}


def test_unknown_task_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'rte'"):
        registry.resolve(["rtee"])


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_validates(path):
    cfg = load_config(path)
    assert registry.resolve(cfg.tasks)


@pytest.mark.real_data
def test_quickstart_tasks_are_registered_with_train_and_dev_data(glue_dir):
    cfg = load_config(ROOT / "configs" / "quickstart.yaml")  # the README's first command
    for spec in registry.resolve(cfg.tasks):
        folder = glue_dir / spec.tsv.dir
        assert all(find_split_file(folder, split) for split in (spec.tsv.train, *spec.tsv.dev)), spec.name


def test_overrides_win_and_yaml_floats_without_dot_parse():
    cfg = load_config(None, ["train.lr=3e-5", "tasks=[rte, mrpc]", "data.max_train_examples=null"])
    assert cfg.train.lr == 3e-5 and cfg.tasks == ["rte", "mrpc"] and cfg.data.max_train_examples is None


def test_unknown_key_names_file_and_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 1e-4\n")
    with pytest.raises(ConfigError, match=r"c.yaml: train: unknown key 'learning_rate'"):
        load_config(path)


def test_wrong_type_quotes_the_value(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  batch_size: big\n")
    with pytest.raises(ConfigError, match=r"train.batch_size: expected int, got 'big'"):
        load_config(path)


def test_a_padding_multiple_must_divide_the_sequence_length():
    with pytest.raises(ConfigError, match=r"pad_to_multiple_of must be a positive divisor of max_seq_len \(128\), got 5"):
        load_config(None, ["data.pad_to_multiple_of=5"])


def test_out_of_range_value_is_refused():
    with pytest.raises(ConfigError, match="warmup is out of range"):
        load_config(None, ["train.warmup=1.5"])


@pytest.mark.parametrize("setting", ["train.lr=.inf", "train.epochs=.inf", "train.warmup=.nan", "train.weight_decay=inf",
                                     "train.max_grad_norm=.inf", "model.dropout=.nan", "data.holdout=.nan",
                                     "adaptive.margin=-.inf", "adaptive.lr=.inf", "train.sampler_options.temperature=.inf"])
def test_infinite_or_nan_numbers_are_refused_naming_the_key(setting):
    key = setting.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"^defaults \+ overrides: {key}: expected a finite number, got "):
        load_config(None, [setting])


def test_yaml_python_tags_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tasks: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_task_file_with_unknown_key_is_refused(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("mytask:\n  labels: [a, b]\n  metric: [accuracy]\n  tsv: {dir: X, text: [s]}\n")
    with pytest.raises(ConfigError, match="unknown key 'metric'.*did you mean 'metrics'"):
        registry.load_task_file(path)


def test_new_task_is_a_yaml_entry(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("sick:\n  labels: [a, b, c]\n  tsv: {dir: SICK, text: [s1, s2], label: y}\n")
    monkeypatch.setenv("MTL_TICKETS_TASKS", str(tmp_path))
    assert registry.resolve(["sick"])[0].labels == ["a", "b", "c"]


def test_register_task_from_python(monkeypatch):
    monkeypatch.setattr(registry, "_extra", {})
    spec = register_task(TaskSpec(name="toy", labels=["a", "b"], tsv=TsvSource(dir="TOY", text=["s"], label="y")))
    assert registry.resolve(["toy"]) == [spec]
    with pytest.raises(ValueError, match="not registered yet"):
        register_task(spec)


def test_defaults_are_the_protocol_recipe():
    cfg = Config()
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.train.warmup, cfg.train.weight_decay) == (32, 3.0, 0.1, 0.01)
    assert cfg.model.pooling == "mean" and cfg.data.max_seq_len == 128


@pytest.mark.slow
def test_the_wheel_ships_the_task_declarations(tmp_path):
    """A non-editable install has no tasks/ beside the package: the wheel must carry it."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(root),
                            "-w", str(tmp_path)], capture_output=True, text=True, check=False, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("mtl_tickets-*.whl"))).namelist()
    assert {f"mtl_tickets/tasks/{p.name}" for p in (root / "tasks").glob("*.yaml")} <= set(names)
