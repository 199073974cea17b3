"""The feedback report for the people who tune the rules: ``cramp-cds feedback-report`` and ``/admin/feedback``.

| module | job |
|---|---|
| `report` | a :class:`~cds_hooks.storage.analytics.FeedbackSummary` as CSV or as one self-contained HTML page |
| `web` | the ``/admin/feedback`` page (``CRAMP_ADMIN=on``, behind ``CRAMP_ADMIN_TOKEN``) |
| `cli` | the ``feedback-report`` subcommand |
"""
