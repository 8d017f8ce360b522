"""The ablation table's numbers, orderings, Markdown and plots.

Rows are aggregated over their runs (the baseline over its seeds); a claim
`left op right` of the paper is checked on the measured means, a difference
no larger than the baseline's seed range (max - min) counting as a tie.
"""

import datetime
import os

from simsiam_jax import plot

VERDICTS = ('holds', 'tie', 'does not hold', 'n/a')


def aggregate(values: list) -> dict:
  """{'mean', 'spread' (max - min), 'n'} of the values that are not None."""
  values = [v for v in values if v is not None]
  if not values:
    return {'mean': None, 'spread': None, 'n': 0}
  return {'mean': sum(values) / len(values),
          'spread': max(values) - min(values), 'n': len(values)}


def compare(left, op: str, right, tol: float) -> str:
  """'holds', 'tie' or 'does not hold' for `left op right` ('n/a': missing).

  op: '>', '>=' or '~' (about equal). A difference of at most `tol` is a
  tie: it satisfies '>=' and '~', and neither confirms nor refutes '>'.
  """
  if left is None or right is None:
    return 'n/a'
  diff = left - right
  if op == '~':
    return 'holds' if abs(diff) <= tol else 'does not hold'
  if diff > tol:
    return 'holds'
  if diff < -tol:
    return 'does not hold'
  return 'holds' if op == '>=' else 'tie'


def group_verdict(verdicts: list[str]) -> str:
  """One refuted claim refutes the group; then a missing number, then a tie."""
  for worst in ('does not hold', 'n/a', 'tie'):
    if worst in verdicts:
      return worst
  return 'holds'


def evaluate_claims(rows: dict, claims: dict,
                    metrics=('probe_top1', 'knn_top1')) -> dict:
  """Each group's claims against the measured rows, per metric.

  Args:
    rows: {row name: {metric: aggregate(...)}}, with 'baseline', whose seed
      range is the tie tolerance.
    claims: {group: ((left row, op, right row), ...)}; groups with a row
      not in `rows` are left out.
    metrics: the metrics checked.

  Returns:
    {group: {'claims': [{'claim': str, metric: {'left', 'right',
    'tolerance', 'verdict'}}], metric: the group's verdict}}.
  """
  result = {}
  for group, group_claims in claims.items():
    if not all(l in rows and r in rows for l, _, r in group_claims):
      continue
    checked = []
    for left, op, right in group_claims:
      claim = {'claim': f'{left} {op} {right}'}
      for metric in metrics:
        tol = rows['baseline'][metric]['spread'] or 0.0
        a, b = rows[left][metric]['mean'], rows[right][metric]['mean']
        claim[metric] = {'left': a, 'right': b, 'tolerance': tol,
                         'verdict': compare(a, op, b, tol)}
      checked.append(claim)
    result[group] = {'claims': checked, **{
        m: group_verdict([c[m]['verdict'] for c in checked])
        for m in metrics}}
  return result


def _pct(agg: dict) -> str:
  if agg['mean'] is None:
    return '—'
  text = f'{100 * agg["mean"]:.2f}'
  return text + (f' ± {50 * agg["spread"]:.2f}' if agg['n'] > 1 else '')


def _pts(agg: dict) -> str:
  return '—' if agg['spread'] is None else f'{100 * agg["spread"]:.2f} pts'


def percent(value) -> str:
  return '—' if value is None else f'{100 * value:.2f}'


def duration(seconds) -> str:
  if seconds is None:
    return '—'
  m, s = divmod(int(round(seconds)), 60)
  return f'{m // 60}h{m % 60:02d}m' if m >= 60 else f'{m}m{s:02d}s'


def _state(res: dict, names: list[str]) -> str:
  """'' if every run of a row and its probe finished, else what happened."""
  notes = []
  for n in names:
    run = res['runs'][n]
    if run['status'] != 'done':
      notes.append(f'{n} {run["status"]}')
    elif run['probe_status'] != 'done':
      notes.append(f'{n} probe {run["probe_status"]}')
  return f' ({"; ".join(notes)})' if notes else ''


def markdown(res: dict) -> str:
  """ablations.md from results.json's content."""
  base = res['rows']['baseline']
  sets = ' '.join(f'{k}={v}' for k, v in res['set'].items()) or '-'
  lines = [
      '# SimSiam ablations', '', f'`{res["command"]}`', '',
      f'Written {datetime.datetime.now():%Y-%m-%d %H:%M}; this invocation '
      f'took {duration(res["wall_time_s"])}, all runs and probes so far '
      f'{duration(res["total_run_wall_s"])}. Base config `{res["config"]}`, '
      f'every run with `{sets}`.', '',
      "kNN: the pretraining summary's `knn_top1`; probe: the fast linear "
      'probe (logistic regression on frozen features); wall: pretraining. '
      f'Baseline over seeds {", ".join(map(str, res["seeds"]))}: ± is half '
      'the seed range; a difference within the range (kNN '
      f'{_pts(base["knn_top1"])}, probe {_pts(base["probe_top1"])}) is a '
      f'tie. Paper: {res["paper_source"]}', '',
      '| group | row | overrides | kNN top-1 % | probe top-1 % | collapse_std '
      "| wall | paper top-1 % | paper's ordering here (probe; kNN) |",
      '|---|---|---|---|---|---|---|---|---|',
      *_table_rows(res),
      '', "## The paper's ordering per group", '']
  for group, order in res['orderings'].items():
    lines.append(f'- **{group}**: ' + ' / '.join(
        f'`{c["claim"]}`: ' + '; '.join(
            f'{m.split("_")[0]} {percent(c[m]["left"])} vs '
            f'{percent(c[m]["right"])} {c[m]["verdict"]}'
            for m in ('probe_top1', 'knn_top1'))
        for c in order['claims']))
  failed = [f'- `{n}` {kind} (exit {r[key + "returncode"]}): '
            f'`{r[key + "last_log_line"]}`'
            for n, r in res['runs'].items()
            for kind, key in (('run', ''), ('probe', 'probe_'))
            if r[key + 'status'] == 'failed']
  if failed:
    lines += ['', '## Failed', '', *failed]
  return '\n'.join(lines) + '\n'


def _table_rows(res: dict) -> list[str]:
  lines, seen = [], set()
  seeds = ', '.join(map(str, res['seeds']))
  for name, row in res['rows'].items():
    own = row['overrides']
    if own:
      overrides = ' '.join(f'{k}={v}' for k, v in own.items())
    else:
      overrides = f'seeds {seeds}' if name == 'baseline' else '= baseline'
    order = res['orderings'].get(row['group'])
    verdict = (f'{order["probe_top1"]}; {order["knn_top1"]}'
               if order and row['group'] not in seen else '')
    seen.add(row['group'])
    std = row['collapse_std']['mean']
    paper = (row['paper_note'] if row['paper_top1'] is None
             else row['paper_top1'])
    lines.append(
        f'| {row["group"]} | {row["label"]}{_state(res, row["runs"])} | '
        f'{overrides} | {_pct(row["knn_top1"])} | {_pct(row["probe_top1"])} '
        f'| {"—" if std is None else f"{std:.3f}"} | '
        f'{duration(row["wall_s"]["mean"])} | {paper} | {verdict} |')
  return lines


def write_plots(runs_dir: str, group_runs: dict, out_dir: str) -> list[str]:
  """Per group, its runs' curves overlaid: OUT_DIR/GROUP_METRIC.png.

  Args:
    runs_dir: the folder of the runs' workdirs.
    group_runs: {group: [run name, ...]}.
    out_dir: where the PNGs go.
  """
  paths = []
  for group, names in group_runs.items():
    workdirs = [os.path.join(runs_dir, n) for n in dict.fromkeys(names)
                if os.path.exists(os.path.join(runs_dir, n, 'metrics.jsonl'))]
    if workdirs:
      paths += plot.plot_runs(workdirs, out_dir, prefix=f'{group}_')
  return paths
