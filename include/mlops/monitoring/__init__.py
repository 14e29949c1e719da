"""Monitoring: a window of the prediction log judged against the champion's own training data.

- `reading`: the window's prediction log (online and batch), the late labels and their join;
  which rows are answers, which the reports judge (the champion's), and sampling.
- `reports`: the four Evidently reports (data drift, prediction drift, performance, data
  quality) and the numbers read back from their snapshots.
- `window`: the champion (registry reads: `registry.NoChampion`, `RegistryUnavailable`), its scored
  reference, and `analyse`, every report and number of one window.
- `variants`: the same numbers per (variant, version), shadow included, and their table.
- `history`: one MLflow run per window and the Evidently workspace with its dashboard.
- `step`: the task `monitor` (reads, analyses, saves reports and the summary the drift policy
  reads) and its settings, `MonitoringConfig`.

Where the objects live is `include.mlops.layout`'s; the test-data log generators are in
`include.mlops.data.predictions`.
"""
