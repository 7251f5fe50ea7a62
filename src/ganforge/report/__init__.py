"""Seeing a run: its log and status (``runlog``), plots, sample animations and the HTML report.

``runlog`` is light (no matplotlib) so that the training loop can import it; ``html.write_report``
builds ``RUN_DIR/report.html`` and ``runs.list_runs`` feeds ``ganforge runs``.
"""
