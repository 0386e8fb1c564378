"""``bnn-train CONFIG.yaml --out RUN_DIR [--resume]``; several processes: ``torchrun --nproc_per_node N
-m bnnmd.cli.train CONFIG.yaml --out RUN_DIR`` (``training.distributed``, docs/training.md)."""

from __future__ import annotations

import argparse
import os
import sys

from bnnmd.cli._errors import guarded
from bnnmd.train import train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="bnn-train",
        description="Train a stochastic NequIP model (sghmc, map, mc_dropout or ensemble) and write "
                    "posterior samples to RUN_DIR/samples/. Under torchrun the processes share the chains "
                    "or each minibatch (training.distributed).")
    parser.add_argument("config", help="YAML config (see examples/ and docs/training.md)")
    parser.add_argument("--out", required=True, help="run directory (created; must not hold a run unless --resume)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)

    def run() -> int:
        result = train(args.config, args.out, resume=args.resume, progress=not args.quiet)
        if os.environ.get("RANK", "0") == "0":  # under torchrun every process returns here: rank 0 says it
            print(f"bnn-train: {result.status} at step {result.step}; {len(result.samples)} sample(s) in "
                  f"{result.run_dir / 'samples'}")
        return 130 if result.status == "interrupted" else 0

    return guarded("bnn-train", run)


if __name__ == "__main__":
    sys.exit(main())
