"""Scenario comparison and the report of a run: quality, time, tokens, cost and memory per
tier, scaling fits, recommendations (``compare``), read from a results file or Postgres
(``load``), shown in the terminal (``terminal``) and as one self-contained HTML page (``html``)."""
