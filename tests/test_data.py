"""GLUE loading: every file layout, the real files' row counts (real_data tier), clear errors, caching
and batching."""

import gzip

import numpy as np
import pytest
import torch

from mtl_tickets import registry
from mtl_tickets.config import DataConfig
from mtl_tickets.data import Encoded, TaskStream, collate, eval_batches, load_task, read_split, subsample, train_batches
from mtl_tickets.encoders import load_tokenizer
from mtl_tickets.schema import ConfigError

from .conftest import FEW_ROWS_GLUE

# (task, split, labelled, rows) for every file of the shared copy (its README's table).
LOCAL_FILES = [
    ("cola", "train", True, 8551), ("cola", "dev", True, 1043), ("cola", "test", False, 1063),
    ("sst2", "train", True, 67349), ("sst2", "dev", True, 872), ("sst2", "test", False, 1821),
    ("mrpc", "train", True, 3668), ("mrpc", "dev", True, 408), ("mrpc", "test", False, 1725),
    ("stsb", "train", True, 5749), ("stsb", "dev", True, 1500), ("stsb", "test", False, 1379),
    ("qnli", "train", True, 10293), ("qnli", "dev", True, 5463), ("qnli", "test", False, 5463),
    ("rte", "train", True, 2490), ("rte", "dev", True, 277), ("rte", "test", False, 3000),
    ("wnli", "train", True, 635), ("wnli", "dev", True, 71), ("wnli", "test", False, 146),
    ("ax", "diagnostic", False, 1104), ("qqp", "train", True, 10309),
    ("mnli", "train", True, 29526), ("mnli", "dev_matched", True, 9815), ("mnli", "dev_mismatched", True, 9832),
]


def check_split(glue, task, split, labelled, rows):
    spec = registry.all_tasks()[task]
    raw = read_split(spec, glue, split, labelled)
    assert len(raw.texts) == rows
    assert all(len(t) == len(spec.tsv.text) and all(isinstance(x, str) for x in t) for t in raw.texts[:50])
    if labelled:
        assert len(raw.labels) == rows
        if spec.kind == "classification":
            assert set(np.unique(raw.labels)) <= set(range(len(spec.labels)))
        else:
            assert raw.labels.min() >= 0 and raw.labels.max() <= 5


@pytest.mark.parametrize("task,split,labelled,rows", LOCAL_FILES, ids=lambda v: str(v))
def test_every_glue_layout_loads_from_the_few_rows_copy(glue_slice, task, split, labelled, rows):
    check_split(glue_slice, task, split, labelled, 24 if split.startswith("dev") else 16)


@pytest.mark.real_data
@pytest.mark.parametrize("task,split,labelled,rows", LOCAL_FILES, ids=lambda v: str(v))
def test_every_real_glue_file_loads_with_its_row_count(glue_dir, task, split, labelled, rows):
    check_split(glue_dir, task, split, labelled, rows)


@pytest.mark.real_data
def test_the_few_rows_copy_is_the_head_of_the_real_files(glue_dir):
    shipped = sorted(FEW_ROWS_GLUE.glob("*/*.tsv*"))
    assert {p.relative_to(FEW_ROWS_GLUE) for p in shipped} == {p.relative_to(glue_dir) for p in glue_dir.glob("*/*.tsv*")}
    for path in shipped:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            head = f.read()
        with opener(glue_dir / path.relative_to(FEW_ROWS_GLUE), "rb") as f:
            assert f.read(len(head)) == head, path


def test_cola_headerless_files_read_the_sentence_column(glue_slice):
    raw = read_split(registry.all_tasks()["cola"], glue_slice, "train", True)
    assert raw.texts[0] == ("Our friends won't buy this analysis, let alone the next one we propose.",)
    assert raw.labels[0] == 1


def test_quotes_are_literal_text(glue_slice):
    raw = read_split(registry.all_tasks()["mrpc"], glue_slice, "dev", True)
    assert raw.texts[0][1].startswith('" The foodservice')  # no quoting: the quote stays


def write_rte(tmp_path, rows):
    folder = tmp_path / "RTE"
    folder.mkdir(exist_ok=True)
    (folder / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "".join(rows), encoding="utf-8")
    return tmp_path


def test_malformed_row_names_file_and_line(tmp_path):
    glue = write_rte(tmp_path, ["0\ta\tb\tentailment\n", "1\ta\tb\n"])
    with pytest.raises(ConfigError, match=r"RTE/train.tsv:3: expected 4 tab-separated columns, got 3"):
        read_split(registry.all_tasks()["rte"], glue, "train", True)


def test_unknown_label_names_file_line_and_labels(tmp_path):
    glue = write_rte(tmp_path, ["0\ta\tb\tmaybe\n"])
    with pytest.raises(ConfigError, match=r"train.tsv:2: unknown label 'maybe'.*entailment"):
        read_split(registry.all_tasks()["rte"], glue, "train", True)


def test_gzipped_files_read_like_plain_ones(tmp_path):
    glue = write_rte(tmp_path, ["0\ta\tb\tentailment\n", "1\tc\td\tnot_entailment\n"])
    plain = read_split(registry.all_tasks()["rte"], glue, "train", True)
    path = glue / "RTE" / "train.tsv"
    (glue / "RTE" / "train.tsv.gz").write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    packed = read_split(registry.all_tasks()["rte"], glue, "train", True)
    assert packed.texts == plain.texts and np.array_equal(packed.labels, plain.labels)


def test_missing_glue_dir_is_a_clear_error(tmp_path):
    cfg = DataConfig(glue_dir=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_task(registry.all_tasks()["rte"], None, cfg)


def test_load_task_tokenizes_caches_and_subsamples(glue_slice, tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    cfg = DataConfig(glue_dir=str(glue_slice), cache_dir=str(tmp_path / "cache"), max_train_examples=10, max_seq_len=16)
    first = load_task(registry.all_tasks()["mnli"], tokenizer, cfg, with_test=False)
    assert len(first.train) == 10 and set(first.dev) == {"dev_matched", "dev_mismatched"}
    assert first.train.lengths.max() <= 16
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3
    again = load_task(registry.all_tasks()["mnli"], tokenizer, cfg)
    assert np.array_equal(again.train.ids, first.train.ids)


def test_a_per_task_cap_replaces_the_common_one(glue_slice, tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    cfg = DataConfig(glue_dir=str(glue_slice), cache_dir=str(tmp_path), max_train_examples=5,
                     max_train_examples_per_task={"rte": None, "mrpc": 7})
    sizes = {name: len(load_task(registry.all_tasks()[name], tokenizer, cfg).train) for name in ("rte", "mrpc", "sst2")}
    everything = len(load_task(registry.all_tasks()["rte"], tokenizer, DataConfig(glue_dir=str(glue_slice), cache_dir=str(tmp_path))).train)
    assert sizes == {"rte": everything, "mrpc": 7, "sst2": 5} and everything > 7


def numbered(n: int) -> Encoded:
    """n examples of 1 to 3 tokens, each token and the label being the example's position in the file."""
    lengths = np.arange(n) % 3 + 1
    ids = np.repeat(np.arange(n, dtype=np.int32), lengths)
    return Encoded(ids, np.zeros(len(ids), np.int8), np.concatenate([[0], np.cumsum(lengths)]), np.arange(n))


def test_subsample_is_fixed_by_seed_and_keeps_file_order():
    data = numbered(40)
    a, again, other_seed = subsample(data, 5, 0), subsample(data, 5, 0), subsample(data, 5, 1)
    assert np.array_equal(a.ids, again.ids) and np.array_equal(a.labels, again.labels) and len(a) == 5
    assert (np.diff(a.labels) > 0).all()  # file order
    assert all(set(a.ids[a.offsets[i]:a.offsets[i + 1]]) == {p} for i, p in enumerate(a.labels))  # whole examples
    assert not np.array_equal(other_seed.labels, a.labels)
    assert subsample(data, 40, 0) is data


def test_train_batches_cover_every_example_once_grouped_by_length():
    lengths = np.random.default_rng(0).integers(3, 60, size=103)
    batches = train_batches(lengths, 8, torch.Generator().manual_seed(0))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(103))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < np.ptp(lengths) / 2  # grouped: far less padding than random batches


def test_eval_batches_cover_every_example_once():
    lengths = np.arange(50) % 7
    assert sorted(np.concatenate(list(eval_batches(lengths, 16))).tolist()) == list(range(50))


def test_task_stream_resumes_exactly(glue_slice, tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = load_task(registry.all_tasks()["rte"], tokenizer, DataConfig(glue_dir=str(glue_slice), cache_dir=str(tmp_path))).train
    straight = TaskStream("rte", data, 3, seed=7)
    batches = [straight.next()["input_ids"] for _ in range(9)]
    first = TaskStream("rte", data, 3, seed=7)
    for _ in range(4):
        first.next()
    resumed = TaskStream("rte", data, 3, seed=7, cursor=first.cursor)
    assert all(torch.equal(resumed.next()["input_ids"], b) for b in batches[4:])


def three_examples() -> Encoded:
    """Examples of 2, 5 and 2 tokens (ids 1-9), labelled 0, 1, 0."""
    return Encoded(np.arange(1, 10, dtype=np.int32), np.zeros(9, np.int8), np.array([0, 2, 7, 9]), np.array([0, 1, 0]))


def test_collate_pads_dynamically():
    data = three_examples()
    batch = collate(data, np.array([0, 1]))
    assert batch["input_ids"].tolist() == [[1, 2, 0, 0, 0], [3, 4, 5, 6, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [0, 1]


def test_collate_rounds_the_batch_length_up_to_a_multiple():
    data = three_examples()
    batch = collate(data, np.array([0, 1]), multiple=4)
    assert batch["input_ids"].tolist() == [[1, 2, 0, 0, 0, 0, 0, 0], [3, 4, 5, 6, 7, 0, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [2, 5]
    stream = TaskStream("rte", data, batch_size=3, seed=7, pad_to_multiple_of=4)
    assert stream.next()["input_ids"].shape[1] == 8


def test_padding_to_a_multiple_leaves_what_an_encoder_computes_for_real_tokens(tiny_bert):
    """Padding is masked: rounding the length up changes nothing but float rounding."""
    data = three_examples()
    exact, padded = (collate(data, np.array([0, 1, 2]), multiple=m) for m in (1, 8))
    with torch.no_grad():
        a, b = (tiny_bert(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state for batch in (exact, padded))
    real = exact["attention_mask"].bool()
    assert b.shape[1] == 8 and a.shape[1] == 5
    torch.testing.assert_close(b[:, :5][real], a[real], atol=1e-5, rtol=1e-5)


def test_without_a_glue_dir_data_comes_from_the_hub(monkeypatch, tiny_model_dir, tmp_path):
    import datasets

    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        rows = {"sentence1": ["a cat", "a dog sat"], "sentence2": ["an animal", "nothing"], "label": [0, 1]}
        return datasets.Dataset.from_dict(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.delenv("GLUE_DIR", raising=False)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    task = load_task(registry.all_tasks()["rte"], tokenizer, DataConfig(cache_dir=str(tmp_path)))
    assert calls == [("nyu-mll/glue", "rte", "train"), ("nyu-mll/glue", "rte", "validation")]
    assert len(task.train) == 2 and task.dev["validation"].labels.tolist() == [0, 1]


def test_an_unreachable_hub_is_one_clear_error(monkeypatch, tiny_model_dir, tmp_path):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.delenv("GLUE_DIR", raising=False)
    with pytest.raises(ConfigError, match="offline\\? give --glue-dir"):
        load_task(registry.all_tasks()["rte"], load_tokenizer(str(tiny_model_dir)), DataConfig(cache_dir=str(tmp_path)))
