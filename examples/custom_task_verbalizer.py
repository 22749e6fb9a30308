"""A custom classification task with a verbalizer, through the library API (no CLI).

Registers a task (template + label words per class + metric), writes a tiny CSV data set,
and trains a soft prompt on SmolLM2-135M-Instruct to answer through the label words.

    python examples/custom_task_verbalizer.py [train.epochs=3 ...]
"""

import csv
import sys
import tempfile
from pathlib import Path

import softprompt
from softprompt.tasks import Task, register_task

register_task(Task(
    name="ticket_urgency",
    num_labels=2,
    label_words=[["routine", "normal"], ["urgent", "critical"]],  # several words per class: log-sum-exp
    template="Support ticket: {text}\nUrgency:",
    metric="accuracy",
    main_metric="accuracy",
    label_names=["routine", "urgent"],
))

ROUTINE = ["How do I change my avatar?", "Please update my billing address.", "Can I export my notes to PDF?",
           "What are your opening hours?", "I would like a copy of last month's invoice.",
           "Is there a dark mode?", "How do I add a second user?", "Where can I find the user guide?"]
URGENT = ["The whole site is down for all our customers!", "Payments are failing since this morning.",
          "We were hacked, someone changed our admin password.", "Production database is corrupted, help now.",
          "All orders are being charged twice!", "Our checkout page returns error 500 for everyone.",
          "Customer data is visible to other accounts!", "The app crashes on launch for every user."]


def write(path: Path, rows) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return str(path)


if __name__ == "__main__":
    folder = Path(tempfile.mkdtemp())
    rows = [(t, 0) for t in ROUTINE] + [(t, 1) for t in URGENT]
    train_file = write(folder / "train.csv", rows[::2] + rows[1::2][:4])
    eval_file = write(folder / "dev.csv", rows[1::2])
    result = softprompt.train(
        {"model": "smollm2-135m-instruct", "classifier": "verbalizer", "run_id": "ticket-urgency",
         "task": {"name": "ticket_urgency", "train_file": train_file, "eval_file": eval_file},
         "adapter": {"type": "prompt_tuning", "num_virtual_tokens": 8, "init": "text:Classify the ticket's urgency."},
         "method": {"name": "mle"},
         "train": {"batch": 4, "epochs": 2, "lr": 0.03}},
        sys.argv[1:],
    )
    print(f"dev accuracy {result.metrics['eval_accuracy']:.3f}; run folder: {result.run_dir}")
