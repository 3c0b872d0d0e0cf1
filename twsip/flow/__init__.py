"""The builder's flows: `model` turns flow JSON into an ExecutionGraph (pure data), `events`
is the public event stream of a run, and `engine` runs a graph on the manager's instances.
"""
