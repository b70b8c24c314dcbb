"""The SQL text of the project: pure functions and constants, no database access.

Every statement is written once here, over the placeholder ``@schema@`` for
the schema the summaries are installed in (:mod:`.render`). The revisions
carry a frozen rendering of it (``python -m cnpg_trace_summaries.dev.freeze``);
the live commands render it for the schema they work on.
"""
