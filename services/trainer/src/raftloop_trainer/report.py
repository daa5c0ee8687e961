"""Run reports: JSON, Markdown and a PNG plot of baseline vs candidate per metric."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raftloop_trainer.domain import GateDecision
from raftloop_trainer.metrics import PairedDiff

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"


def report_payload(
    *,
    title: str,
    baseline: str,
    candidate: str,
    diffs: Mapping[str, Sequence[PairedDiff]],
    decision: GateDecision | None,
    pairwise: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report as plain data; `pairwise` is the judge's win rate or why it was not measured."""
    return {
        "title": title,
        "baseline": baseline,
        "candidate": candidate,
        "sets": {name: [d.as_dict() for d in ds] for name, ds in diffs.items()},
        "decision": (
            {"promote": decision.promote, "reasons": decision.reasons} if decision else None
        ),
        "pairwise": dict(pairwise) if pairwise is not None else None,
        **(dict(extra) if extra else {}),
    }


def flat_metrics(diffs: Mapping[str, Sequence[PairedDiff]]) -> dict[str, float]:
    """`<set>.<metric>.{baseline,candidate,diff,ci_low,ci_high}` as one flat mapping."""
    out: dict[str, float] = {}
    for name, ds in diffs.items():
        for d in ds:
            prefix = f"{name}.{d.metric}"
            out |= {
                f"{prefix}.baseline": d.baseline,
                f"{prefix}.candidate": d.candidate,
                f"{prefix}.diff": d.diff,
                f"{prefix}.ci_low": d.low,
                f"{prefix}.ci_high": d.high,
            }
    return out


def pairwise_metrics(pairwise: Mapping[str, Any] | None) -> dict[str, float]:
    """`holdout.judge_win_rate{,.ci_low,.ci_high}` when the win rate was measured."""
    if not pairwise or not pairwise.get("measured"):
        return {}
    return {
        "holdout.judge_win_rate": float(pairwise["win_rate"]),
        "holdout.judge_win_rate.ci_low": float(pairwise["ci_low"]),
        "holdout.judge_win_rate.ci_high": float(pairwise["ci_high"]),
    }


def _pairwise_lines(pairwise: Mapping[str, Any] | None) -> list[str]:
    if pairwise is None:
        return []
    lines = ["", "## pairwise judge (hold-out, both orders)", ""]
    if not pairwise.get("measured"):
        return [*lines, f"Win rate not measured: {pairwise.get('reason')}."]
    return [
        *lines,
        f"Judge: `{pairwise['judge']}`. A tie counts half; a pair whose two orders disagree is "
        "a tie.",
        "",
        "| win rate | 95% CI | wins | losses | ties | inconsistent | unjudged |",
        "|---|---|---|---|---|---|---|",
        f"| {pairwise['win_rate']:.4f} | {pairwise['ci_low']:.4f} .. {pairwise['ci_high']:.4f} | "
        f"{pairwise['wins']} | {pairwise['losses']} | {pairwise['ties']} | "
        f"{pairwise['inconsistent']} | {pairwise['unjudged']} |",
    ]


def data_summary(
    train: Sequence[Mapping[str, Any]], holdout: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """What the run's examples were: how many, and how many had no retrieved oracle.

    An example without an oracle is one whose reviewer found no retrieved chunk that answers:
    the model cannot quote what it was not shown, so this counts retrieval misses in live
    traffic (rag's hit@k measures them on the demo questions).
    """
    rows = [*train, *holdout]
    missing = sum(1 for r in rows if not r.get("oracle_chunks"))
    return {
        "train_examples": len(train),
        "holdout_examples": len(holdout),
        "without_oracle": missing,
        "without_oracle_share": round(missing / len(rows), 4) if rows else 0.0,
    }


def preference_metrics(stages: Mapping[str, Any] | None) -> dict[str, float]:
    """`train.dpo.{pairs,skipped,steps,reward_margin}` of a recipe with a preference stage.

    `skipped` is 1.0 when the DPO stage did not run (too few pairs); nothing for `sft`.
    """
    if not stages:
        return {}
    dpo = stages.get("dpo") or {}
    out = {
        "train.dpo.pairs": float(dpo.get("pairs", 0)),
        "train.dpo.skipped": 0.0 if dpo.get("state") == "done" else 1.0,
    }
    if dpo.get("state") == "done":
        out["train.dpo.steps"] = float(dpo["steps"])
        if dpo.get("last_reward_margin") is not None:
            out["train.dpo.reward_margin"] = float(dpo["last_reward_margin"])
    return out


def _preference_lines(stages: Mapping[str, Any] | None) -> list[str]:
    if not stages:
        return []
    dpo = stages.get("dpo") or {}
    head = f"Recipe `{stages.get('recipe')}`:"
    if dpo.get("state") == "done":
        margin = dpo.get("last_reward_margin")
        shown = "n/a" if margin is None else f"{margin:+.4f}"
        return [
            "",
            f"{head} DPO on {dpo['pairs']} preference pairs from the {dpo['from']} "
            f"(beta {dpo['beta']}, {dpo['steps']} steps, last reward margin {shown}).",
        ]
    why = dpo.get("reason") or "no stage summary was written"
    return ["", f"{head} **DPO stage skipped**: {why}."]


NO_REGRESSION_SET = "no regression set for this tenant: PUT /v1/admin/regression"


def regression_summary(stored: int, limit: int) -> dict[str, Any]:
    """How many of the tenant's `stored` regression items a run checked, and why none, if none.

    `limit` is `TRAINER_REGRESSION_ITEMS`. A run that checked none says so in the report
    instead of showing a forgetting check that was never made.
    """
    checked = min(stored, limit)
    summary: dict[str, Any] = {"items": checked, "stored": stored, "limit": limit}
    if stored == 0:
        summary["note"] = NO_REGRESSION_SET
    elif checked == 0:
        summary["note"] = (
            f"TRAINER_REGRESSION_ITEMS is 0: none of the tenant's {stored} regression items "
            "was checked"
        )
    return summary


def _regression_lines(regression: Mapping[str, Any] | None) -> list[str]:
    if not regression:
        return []
    if not regression["items"]:
        return ["", f"**Forgetting not checked**: {regression['note']}."]
    return [
        "",
        f"Forgetting check: {regression['items']} of the tenant's {regression['stored']} "
        f"regression items (TRAINER_REGRESSION_ITEMS {regression['limit']}).",
    ]


def _data_lines(data: Mapping[str, Any] | None) -> list[str]:
    if not data:
        return []
    total = data["train_examples"] + data["holdout_examples"]
    lines = [
        "",
        f"Examples: {data['train_examples']} trained on, {data['holdout_examples']} held out; "
        f"{data['without_oracle']} of {total} ({data['without_oracle_share']:.1%}) had no "
        "retrieved chunk that answers (no oracle).",
    ]
    if "oracle_recovered_train" in data:
        lines.append(
            f"Oracles recovered from the knowledge base by the reviewer's answer: "
            f"{data['oracle_recovered_train']} in training, "
            f"{data['oracle_recovered_holdout']} in the hold-out (TRAINER_RECOVER_ORACLES)."
        )
    return lines


def candidate_lines(
    rows: Sequence[Mapping[str, Any]] | None, metric: str = "token_f1"
) -> list[str]:
    """The run's candidates side by side: hold-out gain with its interval, win rate, verdict.

    Only the chosen one (highest gain) was gated for promotion; the others' verdicts say what
    the gate would have made of each alone.
    """
    if not rows:
        return []
    lines = [
        "",
        "## candidates (each against what serves, on the same hold-out)",
        "",
        f"| candidate | adapter | hold-out {metric} | gain | 95% CI | judge win rate | "
        "gate alone |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        primary = row["holdout"].get(metric)
        figures = "n/a | n/a | n/a"
        if primary:
            figures = (
                f"{primary['baseline']:.4f} → {primary['candidate']:.4f} | "
                f"{primary['diff']:+.4f} | {primary['ci_low']:+.4f} .. {primary['ci_high']:+.4f}"
            )
        pairwise = row.get("pairwise") or {}
        rate = "not measured"
        if pairwise.get("measured"):
            rate = (
                f"{pairwise['win_rate']:.3f} ({pairwise['ci_low']:.3f} .. "
                f"{pairwise['ci_high']:.3f})"
            )
        mark = " **(chosen)**" if row["chosen"] else ""
        verdict = "passes" if row["passes"] else "fails"
        lines.append(
            f"| {row['label']}{mark} | `{row['adapter_id'][:12]}` | {figures} | {rate} | "
            f"{verdict} |"
        )
    return lines


def hpo_lines(hpo: Mapping[str, Any] | None) -> list[str]:
    """The hyper-parameter search: its trials (validation loss, lower is better) and choice."""
    if not hpo:
        return []
    lines = ["", "## hyper-parameter search (validation split of the training examples)", ""]
    if hpo.get("skipped_reason"):
        return [*lines, f"Not searched: {hpo['skipped_reason']}."]
    default, best = hpo.get("default_value"), hpo.get("best_value")
    if default is not None and best is not None:
        beats = "beat" if hpo.get("beats_defaults") else "did not beat"
        lines.append(
            f"Validation loss: defaults {default:.4f}, best {best:.4f}; the chosen values {beats} "
            f"the defaults. Train {hpo.get('train_examples', '?')}, validation "
            f"{hpo.get('validation_examples', '?')} examples."
        )
    lines += ["", "| trial | state | validation loss | seconds | values |", "|---|---|---|---|---|"]
    for trial in hpo.get("trials", []):
        value = trial.get("value")
        shown = "n/a" if value is None else f"{value:.4f}"
        seconds = trial.get("seconds")
        values = ", ".join(f"{k}={_short(v)}" for k, v in (trial.get("params") or {}).items())
        lines.append(
            f"| {trial.get('number')} | {trial.get('state')} | {shown} | "
            f"{'n/a' if seconds is None else f'{seconds:.0f}'} | {values} |"
        )
    return lines


def _short(value: Any) -> Any:
    """A searched float with 4 significant digits (a learning rate's 17 are noise)."""
    return f"{value:.4g}" if isinstance(value, float) else value


def error_lines(analysis: Mapping[str, Any] | None) -> list[str]:
    """The error analysis as a table (modes x variants, counts and shares) and its examples."""
    if not analysis or not analysis["columns"]:
        return []
    columns = analysis["columns"]
    limit = analysis.get("max_new_tokens")
    lines = [
        "",
        f"## error analysis (hold-out, {analysis['items']} items)",
        "",
        "Answers per failure mode (rules: `raftloop_trainer/errors.py`; an answer can show "
        f"several{f'; the length limit is {limit} new tokens' if limit else ''}).",
        "",
        "| failure mode | " + " | ".join(f"{c['label']} `{c['variant']}`" for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for mode, label in analysis["modes"].items():
        cells = [c["modes"][mode] for c in columns]
        lines.append(
            f"| {label} | " + " | ".join(f"{e['count']} ({e['share']:.0%})" for e in cells) + " |"
        )
    for column in columns:
        examples = [
            f"- {analysis['modes'][mode]}, `{ex['item_id']}` ({ex['detail']}): "
            f"{ex['question']} → {ex['answer']}"
            for mode, entry in column["modes"].items()
            for ex in entry["examples"]
        ]
        if examples:
            lines += ["", f"### examples: {column['label']} `{column['variant']}`", "", *examples]
    return lines


def markdown(payload: Mapping[str, Any]) -> str:
    """The report as Markdown tables."""
    lines = [f"# {payload['title']}", ""]
    lines.append(f"Baseline: `{payload['baseline']}`; candidate: `{payload['candidate']}`.")
    lines += _data_lines(payload.get("data"))
    lines += _regression_lines(payload.get("regression"))
    lines += _preference_lines(payload.get("preference"))
    lines += candidate_lines(payload.get("candidates"))
    lines += hpo_lines(payload.get("hpo"))
    decision = payload.get("decision")
    if decision:
        verdict = "PROMOTE" if decision["promote"] else "REJECT"
        lines += ["", f"**Gate: {verdict}**", ""] + [f"- {r}" for r in decision["reasons"]]
    for name, rows in payload["sets"].items():
        n = rows[0]["n"] if rows else 0
        lines += ["", f"## {name} ({n} items)", ""]
        lines += ["| metric | baseline | candidate | diff | 95% CI |", "|---|---|---|---|---|"]
        for r in rows:
            lines.append(
                f"| {r['metric']} | {r['baseline']:.4f} | {r['candidate']:.4f} | "
                f"{r['diff']:+.4f} | {r['ci_low']:+.4f} .. {r['ci_high']:+.4f} |"
            )
    lines += _pairwise_lines(payload.get("pairwise"))
    lines += error_lines(payload.get("error_analysis"))
    return "\n".join(lines) + "\n"


def plot(payload: Mapping[str, Any], path: Path) -> Path:
    """Bar chart of baseline vs candidate per metric and set, with the diff's CI as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(payload["sets"].items())
    pairwise = payload.get("pairwise")
    panels = max(len(sets), 1) + (1 if pairwise is not None else 0)
    widths = [6] * max(len(sets), 1) + ([2] if pairwise is not None else [])
    fig, axes = plt.subplots(
        1, panels, figsize=(sum(widths), 4), gridspec_kw={"width_ratios": widths}
    )
    axes_list = list(axes) if panels > 1 else [axes]
    if pairwise is not None:
        _plot_pairwise(axes_list.pop(), pairwise)
    for ax, (name, rows) in zip(axes_list, sets, strict=False):
        xs = range(len(rows))
        base = [r["baseline"] for r in rows]
        cand = [r["candidate"] for r in rows]
        err = [
            [r["candidate"] - (r["baseline"] + r["ci_low"]) for r in rows],
            [(r["baseline"] + r["ci_high"]) - r["candidate"] for r in rows],
        ]
        ax.bar([x - 0.2 for x in xs], base, width=0.4, label=payload["baseline"][:24])
        ax.bar([x + 0.2 for x in xs], cand, width=0.4, yerr=err, label=payload["candidate"][:24])
        ax.set_xticks(list(xs), [r["metric"] for r in rows])
        ax.set_ylim(0, 1)
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.suptitle(str(payload["title"])[:80])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_pairwise(ax: Any, pairwise: Mapping[str, Any]) -> None:
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_xticks([0], ["win rate"])
    ax.set_title("pairwise judge")
    if not pairwise.get("measured"):
        ax.text(0, 0.5, "not measured", ha="center", va="center", fontsize=9)
        ax.set_xlim(-1, 1)
        return
    rate = pairwise["win_rate"]
    err = [[rate - pairwise["ci_low"]], [pairwise["ci_high"] - rate]]
    ax.bar([0], [rate], width=0.5, yerr=err, color="tab:green")
    ax.set_xlim(-1, 1)


def write_report(folder: Path, payload: Mapping[str, Any]) -> Path:
    """Write report.json, report.md and report.png into `folder`; return the JSON path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REPORT_JSON).write_text(json.dumps(payload, indent=2, default=str))
    (folder / REPORT_MD).write_text(markdown(payload))
    plot(payload, folder / REPORT_PNG)
    return folder / REPORT_JSON
