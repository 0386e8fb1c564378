"""``bnn-learn CONFIG.yaml --out DIR [--resume]``: the active-learning loop (bnnmd.learn)."""

from __future__ import annotations

import argparse
import sys

from bnnmd._files import DirectoryLock
from bnnmd.cli._errors import guarded
from bnnmd.learn import ActiveLearning, LearnConfig, LearnError, OnTheFly


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="bnn-learn",
        description="Rounds of MD until the uncertainty halt -> select uncertain frames -> DFT labels -> "
                    "fine-tune (SGHMC, prior on the last posterior) -> export; or (md.mode: otf) one trajectory "
                    "with the model fine-tuned and swapped in where the halt would fire. Resumable.")
    parser.add_argument("config", help="bnn-learn YAML (see docs/learn.md)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    args = parser.parse_args(argv)

    def run() -> int:
        config = LearnConfig.load(args.config)
        with DirectoryLock(args.out, LearnError):  # one bnn-learn per output directory
            loop = OnTheFly if config.md.mode == "otf" else ActiveLearning
            rep = loop(config, args.out, resume=args.resume).run()
        print(f"bnn-learn: {rep['status']}; {rep['dft_calls']} DFT calls; report in {args.out}/report.md")
        return 0

    return guarded("bnn-learn", run)


if __name__ == "__main__":
    sys.exit(main())
