"""`--log-format json`: one JSON object per log record on stderr, for journald/Loki/jq.

Fields: `time` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message`, and `exception`
(the formatted traceback) when there is one. A message with newlines stays one line (JSON
escapes them), so every line of the stream parses on its own.
"""

from __future__ import annotations

import json
import logging
import time


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)
