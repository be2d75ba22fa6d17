"""The command line (``cli``), detection on picture files written as drawings and JSON
(``annotate``), and the drawing itself (``draw``)."""
