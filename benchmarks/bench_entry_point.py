"""Our entry point vs plain RecBole on the same run: time ratio and metric identity.

    python benchmarks/bench_entry_point.py [--model SASRec] [--dataset ml-100k] [--epochs 1]

Each variant runs in a fresh process (RecBole's anomaly-detection switch is process-wide), in
alternation when --repeats > 1, with RecBole's default settings otherwise. Plain RecBole needs
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 to reload its checkpoint on torch >= 2.6 and
train_neg_sample_args=None for CE models; both are given to it here. Prints seconds per training
epoch, the ratio plain / ours, and whether the test metrics are identical.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

DRIVER = """
import json, sys, time
variant, model, dataset, config_dict = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sys.argv = sys.argv[:1]
if variant == "recbole":
    from recbole.quick_start import run_recbole as runner
else:
    from recbole_llm.quick_start import run_recbole_llm as runner
start = time.time()
result = runner(model=model, dataset=dataset, config_dict=config_dict)
print("RESULT " + json.dumps({"wall": time.time() - start,
      "test": {k: float(v) for k, v in result["test_result"].items()}}))
"""

EPOCH_RE = re.compile(r"epoch (\d+) training \[time: ([\d.]+)s")


def run_variant(variant, args, workdir):
    config = {
        "epochs": args.epochs,
        "show_progress": False,
        "state": "INFO",
        "checkpoint_dir": os.path.join(workdir, variant),
        "data_path": os.path.abspath(args.data_path),
        "train_neg_sample_args": None,
    }
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, variant, args.model, args.dataset, json.dumps(config)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{output[-3000:]}")
    result = json.loads(output.split("RESULT ", 1)[1].splitlines()[0])
    epochs = [float(t) for _, t in EPOCH_RE.findall(output)]
    result["epoch_seconds"] = sum(epochs) / len(epochs)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="SASRec")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--data_path", default="dataset", help="our data root")
    args = parser.parse_args()

    runs = {"recbole": [], "recbole_llm": []}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.repeats):
            for variant in runs:
                runs[variant].append(run_variant(variant, args, workdir))
                print(
                    f"{variant:12s} epoch {runs[variant][-1]['epoch_seconds']:7.1f} s   "
                    f"wall {runs[variant][-1]['wall']:7.1f} s",
                    flush=True,
                )
    best = {v: min(r["epoch_seconds"] for r in results) for v, results in runs.items()}
    identical = all(r["test"] == runs["recbole"][0]["test"] for rs in runs.values() for r in rs)
    print(f"\n{args.model} on {args.dataset}, {args.epochs} epoch(s), best of {args.repeats}")
    print(
        f"seconds per training epoch: RecBole {best['recbole']:.1f}, ours {best['recbole_llm']:.1f}"
    )
    print(f"speed-up (RecBole / ours): {best['recbole'] / best['recbole_llm']:.2f}x")
    print(f"test metrics identical: {identical}  {runs['recbole_llm'][0]['test']}")


if __name__ == "__main__":
    main()
