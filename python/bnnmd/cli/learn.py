"""``bnn-learn CONFIG.yaml --out DIR [--resume]``: the active-learning loop (bnnmd.learn)."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="bnn-learn",
        description="Rounds of MD until the uncertainty halt -> select uncertain frames -> DFT labels -> "
                    "fine-tune (SGHMC, prior on the last posterior) -> export. Resumable.")
    parser.add_argument("config", help="bnn-learn YAML (see docs/learn.md)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    args = parser.parse_args(argv)

    from bnnmd.cli._errors import guarded
    from bnnmd.label import LabelError
    from bnnmd.learn import ActiveLearning, LearnConfig, LearnError

    def run() -> int:
        loop = ActiveLearning(LearnConfig.load(args.config), args.out, resume=args.resume)
        rep = loop.run()
        print(f"bnn-learn: {rep['status']}; {rep['dft_calls']} DFT calls; report in {args.out}/report.md")
        return 0

    return guarded("bnn-learn", run, (LearnError, LabelError))


if __name__ == "__main__":
    sys.exit(main())
