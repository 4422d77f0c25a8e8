"""Two processes under torchrun (CPU, gloo, loopback) run `audioconv train`: rank 0 writes the files,
the ranks draw different augmentations, and both end with identical weights (gradients and BatchNorm
statistics are shared)."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from _tones import CLIP_S, SAMPLE_RATE, make_corpus

REPO = Path(__file__).resolve().parents[1]

# Runs in each torchrun process: wraps the augmentation chain to record the generator's state at each
# step and captures fit()'s summary, then calls the real command line.
SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys
    import torch
    import audioconv.training.loop as T
    from audioconv.cli import main

    record = {"rank": int(os.environ["RANK"]), "draws": [], "batch": []}
    real_build, real_fit = T.build_augment, T.fit

    def build(cfg):
        chain = real_build(cfg)
        def recorded(x, generator=None, **kw):
            record["draws"].append(hashlib.sha1(generator.get_state().numpy().tobytes()).hexdigest())
            record["batch"].append(int(x.shape[0]))
            y = chain(x, generator=generator, **kw) if chain is not None else x
            return y
        return recorded

    def fit(config, progress=True, augment=None, **kwargs):
        summary = real_fit(config, progress, augment, **kwargs)
        record["summary"] = summary
        return summary

    T.build_augment, T.fit = build, fit
    code = main(sys.argv[2:])
    with open(os.path.join(sys.argv[1], f"rank{record['rank']}.json"), "w") as f:
        json.dump(record, f)
    sys.exit(code)
""")


def test_two_processes_on_cpu(tmp_path):
    corpus = make_corpus(tmp_path / "tones")
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path), "train", "--train", str(corpus["train"]), "--val", str(corpus["val"]), "--out", str(run),
           "--sample-rate", str(SAMPLE_RATE), "--clip-s", str(CLIP_S), "--channels", "8,16", "--n-mels", "32",
           "--epochs", "2", "--batch-size", "4", "--augment", "default", "--workers", "0", "--no-progress"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]

    # each rank takes half of the 72 training clips: 36 // 4 = 9 steps per epoch, 2 epochs
    for rec in ranks:
        assert len(rec["draws"]) == 18 and set(rec["batch"]) == {4}
        assert rec["summary"]["world_size"] == 2 and rec["summary"]["steps"] == 18
        assert len(set(rec["draws"])) == 18  # a fresh draw every step
    # different augmentation draws on the two ranks, at every step
    assert all(a != b for a, b in zip(ranks[0]["draws"], ranks[1]["draws"]))
    # the same final weights (parameters and BatchNorm buffers) on both ranks
    assert ranks[0]["summary"]["state_sha1"] == ranks[1]["summary"]["state_sha1"]

    # rank 0 wrote the run folder, once
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and lines[-1]["step"] == 18
    assert {"last.pt", "best.pt", "labels.json", "config.json", "snapshots"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    # rank 0 alone printed the summary
    assert r.stdout.count("trained 2 epochs") == 1, r.stdout


def test_warnings_show_once_under_torchrun(tmp_path):
    """Every rank sees the same data; a warning about it (here: validation clips that are training
    clips) is shown by rank 0 only, not once per process."""
    corpus = make_corpus(tmp_path / "tones")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "audioconv",
           "train", "--train", str(corpus["train"]), "--val", str(corpus["train"]), "--out", str(tmp_path / "run"),
           "--sample-rate", str(SAMPLE_RATE), "--clip-s", str(CLIP_S), "--channels", "4,8", "--n-mels", "16",
           "--epochs", "1", "--batch-size", "12", "--augment", "none", "--workers", "0", "--no-progress"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.count("validation clips are also training clips") == 1, r.stderr
