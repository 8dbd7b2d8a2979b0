"""The pages' one import of the report's shared pieces (`from abproxy.report import components as c`),
each kept in the module of its job:

- `text`: Markdown escaping, the number formats (`abproxy.format`), relative times, tables;
- `badges`: verdict / arm-status / health / job badges with the one status vocabulary;
- `views`: derived views of an experiment (forest rows, units, cautions, segments, run history,
  what changed) shared with the HTML export;
- `charts`: chart rendering and encodings.
The snapshot gate every page passes through lives in `gates`.
"""
from __future__ import annotations

from abproxy.report.badges import *  # noqa: F401,F403
from abproxy.report.badges import BADGES, HEALTH, JOB_STATUS, SHIPPED_MEANING, VERDICTS  # noqa: F401
from abproxy.report.charts import *  # noqa: F401,F403
from abproxy.report.charts import DECISION_COLOURS, DECISION_SHAPES  # noqa: F401
from abproxy.report.text import *  # noqa: F401,F403
from abproxy.report.text import WORD_JOINER  # noqa: F401
from abproxy.report.views import *  # noqa: F401,F403
from abproxy.report.views import CHECK_TITLES  # noqa: F401
