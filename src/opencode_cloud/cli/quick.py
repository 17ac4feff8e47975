"""`occ status` as scripts and prompts call it most (`occ status`, `occ status --json`,
`occ --json status`), without click: importing click and parsing with it is a third of
the command's time. Any other command line, shell completion included, goes through
click (`cli/app.py`); both run the same `report_status` and end failures the same way.
"""

from __future__ import annotations

import os

from opencode_cloud.cli.context import HOST_ENVVAR, INSTANCE_ENVVAR, AppContext
from opencode_cloud.cli.failures import interrupted, report_failure
from opencode_cloud.errors import OpencodeCloudError
from opencode_cloud.instance import DEFAULT

# The command lines taken here, to whether they ask for JSON.
QUICK_LINES: dict[tuple[str, ...], bool] = {
    ("status",): False,
    ("status", "--json"): True,
    ("--json", "status"): True,
}
# Set by a shell asking click for completions.
_COMPLETION_VARIABLE = "_OCC_COMPLETE"


def run_quick(args: list[str]) -> int | None:
    """The exit code of `args` when it is a quick command line; None when click must
    parse it."""
    json_output = QUICK_LINES.get(tuple(args))
    if json_output is None or _COMPLETION_VARIABLE in os.environ:
        return None
    from opencode_cloud.cli.status_report import report_status

    app_ctx: AppContext | None = None
    try:
        app_ctx = AppContext.from_options(
            os.environ.get(INSTANCE_ENVVAR) or DEFAULT.name,
            os.environ.get(HOST_ENVVAR),
            json_output=json_output,
        )
        return int(report_status(app_ctx, None, False))
    except OpencodeCloudError as error:
        return report_failure(error, app_ctx, json_output)
    except KeyboardInterrupt:
        return interrupted()
    finally:
        if app_ctx is not None:
            app_ctx.close()
