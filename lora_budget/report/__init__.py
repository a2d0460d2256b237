"""Reports: figures, CSV and Markdown from plan (and, when given, traces and profiles).

``data`` computes (pure Python), ``figures`` draws (matplotlib, imported lazily), ``markdown``
and ``writer`` write the folder.
"""
