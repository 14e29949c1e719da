"""Delivery: how a registered model reaches live traffic, is judged there, and is taken back.

The deploy task of `ml_training` / `ml_retraining` runs `rollout`; `ml_rollback` runs `rollback`.

| module | holds |
|---|---|
| `service` | the scoring-service process (started on loopback for a check when none can take it) and the HTTP calls to it |
| `checks` | smoke and load checks against the service, and their verdict (`run_check`, `judge_load`) |
| `rollout` | the deploy step: promotion by strategy (direct, blue_green, canary, shadow, ab_test) as a ledger move, in phases that wait for live traffic |
| `request` | what the deploy step is asked (`DeployRequest`: register's and evaluate's results, the run, the strategy) and what one rollout works with (`Run`) |
| `phases` | the live phases' state (`Phase`, JSON for XCom) and their wait: what each counts, until when |
| `verdicts` | the judging of each canary step, shadow report and A/B test once its wait ended, and what follows |
| `live` | what the live service measured, per version and variant, between two snapshots |
| `analysis` | canary step verdicts and the shadow report (pure functions on live figures) |
| `abtest` | the A/B test's statistics and decision |
| `abwindow` | reading an A/B test's window: the arms' answers and their labels, read once across a wait's polls |
| `staging` | the staged check of canary, shadow and blue_green before any live phase, and what ends a rollout when a check fails |
| `load` | the load test the checks run: single-record requests from keep-alive clients, arms pinned by header and interleaved |
| `rollback` | undo the last promotion in force, ending any rollout under way |

The deploy stage at a glance: gate passed → ledger move `pending` → strategy published → staged
check (canary / shadow / blue_green) → live phases (each waits, deferred, for soak and traffic,
then is judged) → full switch → post-promotion check → move `done`; any failure undoes the move
(`rolled_back`) and ends the routing, so the service stops using the new version at its next poll.
"""
