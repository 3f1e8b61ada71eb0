"""A run's report as one self-contained HTML file: curves of every metric, the summary, a trajectory browser.

`data` reads a train, eval or collect directory; `page` renders and writes `report.html`; `serve` serves it on
127.0.0.1, regenerated as the run goes on. The page's script and style are `assets/`, inlined into every report.
"""

from rlaif.report.page import write_report
from rlaif.report.serve import ReportServer

__all__ = ["ReportServer", "write_report"]
