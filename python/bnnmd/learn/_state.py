"""What ``bnn-learn`` has done: ``OUT/state.json``, typed.

A :class:`LoopState` holds one :class:`RoundState` per round and the (round, :class:`Phase`) pairs
that are done. The JSON layout is the one bnn-learn has always written (``"done": ["0.export",
...]``, ``"rounds": {"0": {...}}`` with only the fields a round has reached), so a run started by
an earlier version resumes.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from bnnmd._files import write_atomic


class Phase(str, enum.Enum):
    """The phases of a round, in order."""

    EXPORT = "export"
    EVALUATE = "evaluate"
    MD = "md"
    SELECT = "select"
    LABEL = "label"
    FINETUNE = "finetune"


@dataclass
class RoundState:
    """What the phases of one round found (None: the phase has not run)."""

    threshold: Optional[float] = None  # the exported model's halt threshold (model force unit)
    halt_rule: Optional[str] = None
    threshold_epistemic: Optional[float] = None  # md.halt_on epistemic
    threshold_pressure: Optional[float] = None  # md.halt_pressure (model energy/length^3)
    errors: Optional[Dict[str, Dict[str, Any]]] = None  # test set name -> force MAE/RMSE/MLL, frames
    halt_step: Optional[int] = None  # run 0's (None: no halt)
    halt_steps: Optional[List[Optional[int]]] = None  # every run's
    steps_run: Optional[float] = None  # mean over the runs of the steps before the halt (or nsteps)
    selected: Optional[List[List[int]]] = None  # [run, frame] pairs picked
    selected_steps: Optional[List[int]] = None
    selected_frames: Optional[List[int]] = None  # run 0's frames: a state of bnnmd <= 0.1.0
    labelled: Optional[int] = None
    label_failures: Optional[Dict[str, str]] = None  # "step S of run i" -> why
    dft_calls: Optional[int] = None  # the loop's total after this round's labels
    train_frames: Optional[int] = None
    new_frames: Optional[int] = None
    # md.mode otf: round r is event r (the swap of round r + 1's model into the running trajectory)
    event_step: Optional[int] = None  # the MD step the check fired on
    ratio_before: Optional[float] = None  # c_unc[4] / c_unc[5] there with the old model
    ratio_after: Optional[float] = None  # ... with the new one, at the same geometry
    event_seconds: Optional[float] = None  # wall clock from the check to the swap (labels and fine-tuning)
    error_before: Optional[float] = None  # largest per-atom force error on the event's labelled frames, old model
    error_after: Optional[float] = None  # ... new model (model force unit)
    # error_after of each fine-tuning the event ran (otf.tolerance: more than one while above it)
    finetune_errors: Optional[List[float]] = None
    # otf.label_forces: the largest |force LAMMPS integrates with - labeller's force| at the event's step
    # (LAMMPS force unit; ~0: the step went on the labeller's forces)
    label_force_deviation: Optional[float] = None

    @property
    def finetunes(self) -> Optional[int]:
        """Fine-tunings the on-the-fly event ran (None: none recorded)."""
        return None if self.finetune_errors is None else len(self.finetune_errors)

    def picked(self) -> List[List[int]]:
        """The [run, frame] pairs picked for labelling."""
        return self.selected or [[0, f] for f in self.selected_frames or []]

    def halts(self) -> List[Optional[int]]:
        """Every run's halt step (None: no halt)."""
        return self.halt_steps if self.halt_steps is not None else [self.halt_step]

    def update(self, **info) -> None:
        for key, value in info.items():
            if key not in _ROUND_FIELDS:
                raise KeyError(f"RoundState has no field {key!r}")
            setattr(self, key, value)

    def to_dict(self) -> Dict[str, Any]:
        return {f: getattr(self, f) for f in _ROUND_FIELDS if getattr(self, f) is not None}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RoundState":
        return cls(**{k: v for k, v in d.items() if k in _ROUND_FIELDS})


_ROUND_FIELDS = tuple(f.name for f in fields(RoundState))


@dataclass
class LoopState:
    """``state.json``: the config the loop started with, the rounds, what is done, the DFT calls."""

    config: Dict[str, Any]
    done: List[Tuple[int, Phase]] = field(default_factory=list)
    dft_calls: int = 0
    rounds: Dict[int, RoundState] = field(default_factory=dict)
    status: str = "running"
    # md.mode otf: the trajectory's last restart file ("restart_step") and the model LAMMPS runs ("model")
    otf: Dict[str, Any] = field(default_factory=dict)

    def is_done(self, r: int, phase: Phase) -> bool:
        return (r, phase) in self.done

    def round(self, r: int) -> RoundState:
        """Round ``r`` (created empty the first time)."""
        return self.rounds.setdefault(r, RoundState())

    def mark(self, r: int, phase: Phase, **info) -> None:
        self.round(r).update(**info)
        if (r, phase) not in self.done:  # a phase done again (an on-the-fly event's export) is listed once
            self.done.append((r, phase))

    def to_dict(self) -> Dict[str, Any]:
        return {"config": self.config, "done": [f"{r}.{p.value}" for r, p in self.done], "dft_calls": self.dft_calls,
                "rounds": {str(r): s.to_dict() for r, s in sorted(self.rounds.items())}, "status": self.status,
                **({"otf": self.otf} if self.otf else {})}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "LoopState":
        done = []
        for item in d.get("done", []):
            r, _, phase = str(item).partition(".")
            done.append((int(r), Phase(phase)))
        rounds = {int(r): RoundState.from_dict(s) for r, s in d.get("rounds", {}).items()}
        return cls(dict(d["config"]), done, int(d.get("dft_calls", 0)), rounds, str(d.get("status", "running")),
                   dict(d.get("otf", {})))

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> "LoopState":
        return cls.from_dict(json.loads(Path(path).read_text()))
