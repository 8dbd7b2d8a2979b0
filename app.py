"""The abproxy report: `streamlit run app.py -- --workspace DIR` (or ABPROXY_WORKSPACE=DIR).

A thin entry for a source checkout; the installed package carries the same entry as
`abproxy/report/app.py` (what `abproxy serve` runs).
"""
from abproxy.report.app import main

main()
