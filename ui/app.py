"""saegap's Streamlit app: one page per question of the seed, plus jobs and a SQL console.

Run with `saegap ui`; pages live in ui/pages/ and read only through ui/data.py.
"""

from __future__ import annotations

import streamlit as st

# (file, title, icon) in the seed's order (REFERENCE.md §1); the Jobs page comes first.
PAGES = (
    ("pages/jobs.py", "Jobs", ":material/play_circle:"),
    ("pages/layer_summary.py", "Layer summary", ":material/bar_chart:"),
    ("pages/distributions.py", "Distributions", ":material/equalizer:"),
    ("pages/correlations.py", "Correlation explorer", ":material/scatter_plot:"),
    ("pages/tokens.py", "Tokens", ":material/text_fields:"),
    ("pages/single_token.py", "Single-token jobs", ":material/timeline:"),
    ("pages/context.py", "One context", ":material/zoom_in:"),
    ("pages/sql_console.py", "SQL console", ":material/terminal:"),
)

st.set_page_config(page_title="saegap", layout="wide")
navigation = st.navigation([st.Page(path, title=title, icon=icon) for path, title, icon in PAGES])
navigation.run()
