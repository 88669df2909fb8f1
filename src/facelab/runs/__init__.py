"""Run folders: what every training run and experiment leaves behind, and how it is read back.

- :mod:`facelab.runs.folder`: creating a run folder (config.yaml, env.json), its metrics log;
- :mod:`facelab.runs.summary`: the typed ``summary.json`` of each kind of run;
- :mod:`facelab.runs.splits`: the store rows a run trained and validated on (``splits.json``), recorded once
  and read back by evaluation, metrics and studies.
"""
