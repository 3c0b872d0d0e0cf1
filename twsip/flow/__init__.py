"""The builder's flows: `model` turns flow JSON into an ExecutionGraph (pure data), `events`
is the public event stream of a run and `result` what a finished run is; `engine` runs a
graph on the manager's instances, through `run` (chains), `calls` (the run's calls),
`recorder` (what it saw) and one handler per node type (`nodes`, tabled in `registry`).
"""
