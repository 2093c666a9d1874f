"""saegap's Streamlit app: one page per question of the seed, plus jobs and a SQL console.

Run with `saegap ui` (`--read-only` for a shared deployment); pages live in ui/views/ and read only
through ui/data.py.
"""

from __future__ import annotations

import streamlit as st

from ui.background import warm_store
from ui.deployment import read_only

# (file, title, icon) in the seed's order (docs/method.md §1.5); the Jobs page comes first.
PAGES = (
    ("views/jobs.py", "Jobs", ":material/play_circle:"),
    ("views/layer_summary.py", "Layer summary", ":material/bar_chart:"),
    ("views/distributions.py", "Distributions", ":material/equalizer:"),
    ("views/correlations.py", "Correlation explorer", ":material/scatter_plot:"),
    ("views/tokens.py", "Tokens", ":material/text_fields:"),
    ("views/single_token.py", "Single-token jobs", ":material/timeline:"),
    ("views/context.py", "One context", ":material/zoom_in:"),
    ("views/gap_sources.py", "Where does the gap come from?", ":material/call_split:"),
    ("views/sql_console.py", "SQL console", ":material/terminal:"),
)

ABOUT = (
    "**saegap**: are an SAE's reconstruction errors pathological? It splices SAE(x) and nine baselines "
    "into the model and compares the per-token KL and CE-loss increase."
)

st.set_option("client.toolbarMode", "viewer")  # no Deploy button or developer menu, wherever it is started
st.set_page_config(page_title="saegap", page_icon=":material/troubleshoot:", layout="wide",
                   menu_items={"About": ABOUT, "Get help": None, "Report a bug": None})  # fmt: skip
warm_store()  # once per server and store: imports, the store, a read process, the Layer summary's answers
navigation = st.navigation([st.Page(path, title=title, icon=icon) for path, title, icon in PAGES])
if read_only():  # saegap ui --read-only: no job submission or cancel (ui/deployment.py)
    st.sidebar.caption("Read-only deployment: jobs are listed, not submitted or cancelled here.")
navigation.run()
